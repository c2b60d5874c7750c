"""A stream as a WSGI response body, written by the server: the path for every other server.

gunicorn's gevent worker takes the connection over instead (``takeover``);
the Flask development server, gunicorn's sync and threaded workers, TLS and
Flask's test client get the same messages through WSGI, one greenlet or
thread per stream.  The server writes each message; while it does, the
stream's :class:`~ticker.stream.slots.Writer` says since when, so the sweep
can cut off a client that stopped reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import chain

from sqlalchemy import Engine

from ticker.hub import Hub
from ticker.stream.cursor import Cursor, Subscription, catch_up, live
from ticker.stream.slots import Slot


def body(
    engine: Engine,
    hub: Hub,
    heartbeat: float,
    slot: Slot,
    asked: Subscription,
    abort: Callable[[], None],
) -> Iterator[bytes]:
    """Yield one stream's messages until the client goes or the process shuts down.

    ``abort`` cuts the client off when a write has blocked too long.
    """
    writer = slot.watch(abort)
    at = Cursor(asked.symbols)
    messages = chain(
        catch_up(engine, hub, at, asked, slot.streams),
        live(engine, hub, at, heartbeat, slot.streams),
    )
    try:
        for data in messages:
            writer.since = time.monotonic()
            yield data
            writer.since = None
        slot.ended = "shutdown"  # the live messages end only when the hub closes
    except Exception as exc:  # a gone client shows as GeneratorExit, not here
        slot.ended = f"error: {type(exc).__name__}"
        raise
