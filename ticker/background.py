"""Start and stop what runs beside the requests of one process.

Every process that serves streams runs a follower (the one reader of the log
that feeds the hub).  With ``TICKER_PRODUCER=auto`` it also runs the producer's
APScheduler jobs; the lease makes only one process across all of them produce.
"""

from __future__ import annotations

import logging
import sys
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from flask import Flask

logger = logging.getLogger(__name__)

_start_lock = threading.Lock()


def make_scheduler() -> BaseScheduler:
    """Return a scheduler that suits this process: greenlets under gevent, else threads."""
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            from apscheduler.schedulers.gevent import GeventScheduler

            return GeventScheduler()
    return BackgroundScheduler(daemon=True)


def ensure_started(app: Flask) -> None:
    """Start the follower and, if configured, the producer of ``app``, once."""
    if "ticker.scheduler" in app.extensions:
        return
    with _start_lock:
        if "ticker.scheduler" in app.extensions:
            return
        app.extensions["ticker.follower"].start()
        scheduler = None
        if app.extensions["ticker.settings"].producer == "auto":
            scheduler = make_scheduler()
            app.extensions["ticker.producer"].schedule(scheduler)
            scheduler.start()
        app.extensions["ticker.scheduler"] = scheduler


def start_broadcaster(app: Flask) -> None:
    """Serve the caught-up streams of ``app`` from one greenlet (gunicorn's gevent worker)."""
    from ticker.broadcast import Broadcaster
    from ticker.db import get_engine
    from ticker.stream import write_timeout

    heartbeat = app.extensions["ticker.settings"].heartbeat
    broadcaster = Broadcaster(
        get_engine(app),
        app.extensions["ticker.hub"],
        app.extensions["ticker.streams"],
        heartbeat,
        write_timeout(heartbeat),
    )
    app.extensions["ticker.broadcaster"] = broadcaster
    broadcaster.start()


def end_streams(app: Flask) -> None:
    """Let every open stream finish its current message and end, so clients reconnect."""
    app.extensions["ticker.hub"].close()
    broadcaster = app.extensions.get("ticker.broadcaster")
    if broadcaster is not None:
        broadcaster.close()


def stop(app: Flask) -> None:
    """End the streams, stop the jobs and the follower, and hand the producer lease on."""
    end_streams(app)
    scheduler = app.extensions.pop("ticker.scheduler", None)
    if scheduler is not None:
        scheduler.shutdown(wait=True)
    app.extensions["ticker.follower"].stop()
    app.extensions["ticker.producer"].release()
    app.extensions["ticker.streams"].flush()  # counts since the last pulse
