"""PostgreSQL's wake-ups: ``LISTEN ticker_log`` on a connection of its own.

Every append sends ``NOTIFY ticker_log`` with its last id (``log.append``);
a process's follower listens so that it reads another process's commits at
once instead of at its next poll.  Notifications only wake: what is
published always comes from the log, so a lost one loses nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine

from ticker.log.table import CHANNEL

logger = logging.getLogger(__name__)


def listen(
    engine: Engine,
    stop: threading.Event,
    on_connect: Callable[[], object],
    on_notice: Callable[[str], object],
) -> None:
    """Listen until ``stop``: ``on_notice(payload)`` per notification, reconnecting with back-off.

    ``on_connect`` is called each time listening (re)starts, for whatever
    committed while nobody listened.
    """
    import psycopg

    url = engine.url.set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    backoff = 0.5
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                on_connect()
                backoff = 0.5
                while not stop.is_set():
                    for notice in conn.notifies(timeout=1.0):
                        on_notice(notice.payload)
        except psycopg.Error as exc:
            logger.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
