"""Gunicorn settings for ``ticker serve`` (``-c python:ticker.gunicorn_conf``).

gevent workers hold thousands of idle streams each; each worker starts its
follower and producer jobs once it has loaded the app, and hands the producer
lease on when it exits.  On SIGTERM a worker stops accepting, ends every
stream between two messages (clients reconnect, with their last id, to
whichever server answers), and exits.  The master marks each dead worker's
metric files, so ``/metrics`` stops counting its open streams.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from ticker import logsetup, metrics
from ticker.config import load_log_settings

worker_class = "gevent"
worker_connections = 19000  # the per-process file limit here is 20,000
timeout = 30
graceful_timeout = 10
keepalive = 5
# Reconnect storms (a deploy, a network blip) arrive faster than streams open:
# queue up to the kernel's usual somaxconn cap rather than drop.
backlog = 4096
accesslog = None
control_socket_disable = True  # several instances may run side by side
# gunicorn's own lines in our one-line format (TICKER_LOG_LEVEL, TICKER_LOG_FORMAT).
logconfig_dict = logsetup.logging_config(load_log_settings())


def on_starting(server: Any) -> None:
    """Warn when the workers' metrics cannot be added up (gunicorn started without ticker serve)."""
    if metrics.multiprocess_dir() is None and server.cfg.workers > 1:
        server.log.warning(
            "%s is not set: /metrics shows only the worker that answers; "
            "start with `ticker serve`, or set it to an empty directory",
            metrics.MULTIPROC_ENV,
        )


def post_fork(server: Any, worker: Any) -> None:
    """Heed a SIGTERM that comes before the worker sets up its own signal handlers.

    Until then the worker has the master's handler, which would drop it, and a
    worker still booting when a deploy stops it would hold the shutdown up for
    the whole graceful timeout before gunicorn kills it.
    """

    def stop_early(signum: int, frame: Any) -> None:
        worker.alive = False  # what gunicorn's own handler, installed later, does

    signal.signal(signal.SIGTERM, stop_early)


def post_worker_init(worker: Any) -> None:
    """Start the worker's follower, broadcaster and producer jobs, and its shutdown watch."""
    from gunicorn.workers.ggevent import GeventWorker

    from ticker.background import ensure_started, start_broadcaster

    ensure_started(worker.wsgi)
    if isinstance(worker, GeventWorker):  # it alone can hand a connection over to the app
        start_broadcaster(worker.wsgi)
    threading.Thread(target=_end_streams_on_shutdown, args=(worker,), daemon=True).start()


def _end_streams_on_shutdown(worker: Any) -> None:
    # gunicorn waits graceful_timeout for open requests after SIGTERM, and a
    # stream never finishes by itself: end them as soon as the worker stops.
    from ticker.background import end_streams

    while worker.alive:
        time.sleep(0.2)
    end_streams(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the jobs and release the producer lease."""
    from ticker.background import stop

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        stop(app)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's gauges (its open streams); its counters stay in the totals."""
    if metrics.multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """Remove the metrics directory that ``ticker serve`` made for this run."""
    metrics.remove_multiprocess_dir(metrics.multiprocess_dir())
