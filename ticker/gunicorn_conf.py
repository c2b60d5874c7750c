"""Gunicorn settings for ``ticker serve`` (``-c python:ticker.gunicorn_conf``).

gevent workers hold thousands of idle streams each; each worker starts its
follower and producer jobs once it has loaded the app, and hands the producer
lease on when it exits.
"""

from __future__ import annotations

import threading
import time
from typing import Any

worker_class = "gevent"
worker_connections = 10000
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = None
control_socket_disable = True  # several instances may run side by side


def post_worker_init(worker: Any) -> None:
    """Set up logging, then start the worker's follower and producer jobs."""
    from ticker.background import ensure_started
    from ticker.cli import configure_logging

    configure_logging()
    ensure_started(worker.wsgi)
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
