"""Start and stop what runs beside the requests of one process.

Every process that serves streams runs a follower (the one reader of the log
that feeds the hub).  With ``TICKER_PRODUCER=auto`` it also runs the producer's
APScheduler jobs; the lease makes only one process across all of them produce.
"""

from __future__ import annotations

import logging
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

logger = logging.getLogger(__name__)

_start_lock = threading.Lock()


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
            scheduler = BackgroundScheduler(daemon=True)
            app.extensions["ticker.producer"].schedule(scheduler)
            scheduler.start()
        app.extensions["ticker.scheduler"] = scheduler


def stop(app: Flask) -> None:
    """Stop the jobs and the follower, and hand the producer lease on."""
    scheduler = app.extensions.pop("ticker.scheduler", None)
    if scheduler is not None:
        scheduler.shutdown(wait=False)
    app.extensions["ticker.follower"].stop()
    app.extensions["ticker.producer"].release()
