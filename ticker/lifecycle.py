"""Start and stop what runs beside the requests of one process.

Every process that serves streams runs a follower (the one reader of the log
that feeds the hub).  With ``TICKER_PRODUCER=auto`` it also runs the producer's
APScheduler jobs; the lease makes only one process across all of them produce.
Under gunicorn's gevent worker it also runs the broadcaster.  gunicorn's hooks
(``gunicorn_conf``) start these when a worker has loaded the app and stop them
when it exits; under any other server the first ``/stream`` or ``/healthz``
request starts them, and says once what that start lacks.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from ticker.state import AppState

logger = logging.getLogger(__name__)


def gevent_patched() -> bool:
    """Tell whether gevent has patched this process (gunicorn's gevent worker has)."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


def make_scheduler() -> BaseScheduler:
    """Return a scheduler that suits this process: greenlets under gevent, else threads."""
    if gevent_patched():
        from apscheduler.schedulers.gevent import GeventScheduler

        return GeventScheduler()
    return BackgroundScheduler(daemon=True)


def start(state: AppState, broadcast: bool) -> bool:
    """Start the follower, the producer's jobs if configured, and the broadcaster; once.

    ``broadcast``: serve caught-up streams from the broadcaster (gevent only).
    Returns whether this call started them.
    """
    with state.lock:
        if state.started:
            return False
        state.follower.start()
        if state.settings.producer == "auto":
            scheduler = make_scheduler()
            state.producer.schedule(scheduler)
            scheduler.start()
            state.scheduler = scheduler
        if broadcast:
            state.broadcaster.start()
        state.started = True
    return True


def start_on_request(state: AppState, environ: Mapping[str, Any]) -> None:
    """Start the process's parts from a request, when no gunicorn hook did; say what is lost."""
    if state.started:
        return
    broadcast = gevent_patched() and "gunicorn.socket" in environ
    server = environ.get("SERVER_SOFTWARE")  # Flask's test client names none: no warning
    if start(state, broadcast) and server:
        lost = "streams are not ended promptly on shutdown, metrics are per process" + (
            "" if broadcast else ", and each stream holds a thread or greenlet of its own"
        )
        logger.warning(
            "started by %s without ticker's gunicorn settings: %s. Run `ticker serve`, "
            "or gunicorn in the ticker checkout (it reads gunicorn.conf.py there; "
            "from elsewhere add -c CHECKOUT/gunicorn.conf.py)",
            server,
            lost,
        )


def end_streams(state: AppState) -> None:
    """Let every open stream finish its current message and end, so clients reconnect."""
    state.hub.close()
    state.broadcaster.close()


def stop(state: AppState) -> None:
    """End the streams, stop the jobs and the follower, and hand the producer lease on."""
    end_streams(state)
    with state.lock:
        scheduler, state.scheduler = state.scheduler, None
    if scheduler is not None:
        scheduler.shutdown(wait=True)
    state.follower.stop()
    state.appends.close()
    state.producer.release()
    state.streams.flush()  # counts since the last pulse
