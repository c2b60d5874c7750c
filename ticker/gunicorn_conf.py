"""Gunicorn settings for ``ticker serve`` (``-c python:ticker.gunicorn_conf``).

gevent workers hold thousands of idle streams each; each worker starts its
follower and producer jobs once it has loaded the app, and hands the producer
lease on when it exits.
"""

from __future__ import annotations

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
    import logging
    import os

    from ticker.background import ensure_started

    logging.basicConfig(
        level=os.environ.get("TICKER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    ensure_started(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the jobs and release the producer lease."""
    from ticker.background import stop

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        stop(app)
