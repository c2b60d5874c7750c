"""gunicorn's settings and hooks for ticker, however gunicorn is started.

``ticker serve`` passes them (``-c python:ticker.gunicorn_conf``); the
checkout's ``gunicorn.conf.py``, which gunicorn reads by itself from its
working directory, imports them, so ``gunicorn wsgi:app`` there (or, from
elsewhere, with ``-c CHECKOUT/gunicorn.conf.py --chdir CHECKOUT``) runs the
same way:

- the master, on starting, checks the configuration and points
  ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before any worker imports
  ``prometheus_client`` (so ``/metrics`` adds up every worker); once it
  listens, it imports ``prometheus_client``, forks the workers, and runs the
  migrations when one asks;
- each worker, once it has loaded the app and found the database migrated
  (or asked for the migrations and seen them done), starts its follower, its
  producer jobs and, under the gevent worker, its broadcaster;
- on SIGTERM a worker stops accepting, ends every stream between two messages
  (ticker's gevent worker within 50 ms; clients reconnect, with their last id,
  to whichever server answers), hands the producer lease on, and exits at
  once, without Python's teardown (ticker's gevent worker);
- the master drops each dead worker's gauges, so ``/metrics`` stops counting
  its open streams.

Importing this module loads neither the app nor ``prometheus_client``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticker import logsetup
from ticker.boot_migration import Migration
from ticker.config import MULTIPROC_ENV, app_settings, load_log_settings, multiprocess_dir
from ticker.errors import ConfigError

if TYPE_CHECKING:
    from ticker.state import AppState

bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY") or max(2, os.cpu_count() or 1))
worker_class = "ticker.worker.GeventWorker"  # gunicorn's gevent worker, quicker to stop
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
logger_class = "ticker.logsetup.GunicornLogger"  # no access atoms built unless logged

TEMP_PREFIX = "ticker-metrics-"
logger = logging.getLogger("ticker.gunicorn")


def prepare_multiprocess_dir(path: str | None) -> str:
    """Return an empty directory for the workers' metric files: ``path``, or a new one.

    An existing directory is emptied of the files a previous run left, as
    ``prometheus_client`` requires: they would add its counts to this run's.
    """
    if not path:
        return tempfile.mkdtemp(prefix=TEMP_PREFIX)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return str(folder)


def remove_multiprocess_dir(path: str | None) -> None:
    """Delete a directory made by :func:`prepare_multiprocess_dir`, never one given to it."""
    if not path:
        return
    folder = Path(path)
    if folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(TEMP_PREFIX):
        for item in folder.glob("*.db"):
            item.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            logger.warning("could not remove the metrics directory %s", folder)


def on_starting(server: Any) -> None:
    """Check the configuration, prepare the workers' metrics directory."""
    try:
        app_settings()
    except ConfigError as exc:
        raise RuntimeError(f"bad configuration: {exc}") from None  # gunicorn prints it, exits 1
    _check_worker_class(server.cfg.worker_class)
    _prompt_gevent_worker(server)
    os.environ[MULTIPROC_ENV] = prepare_multiprocess_dir(multiprocess_dir())


def when_ready(server: Any) -> None:
    """Be ready to run the migrations when a worker finds the database behind.

    gunicorn has bound the port by now: a client that connects while the
    workers start (a deploy's reconnecting streams) waits in the listen
    backlog and is served by the first worker up, where a closed port would
    refuse it and send it back to wait its whole retry delay again.  Each
    worker loads the app, then reads the schema's version; only when it is
    behind do the migrations run, and the workers touch the database only once
    they are done (``ticker/boot_migration.py``).
    """
    global _migration
    _migration = Migration()
    _migration.start()
    # Once, now that the workers' directory is set (they inherit it): at the first
    # ``child_exit`` of a stop, the import would hold the master's exit, and with it
    # a restart's new server, by 50 ms.
    importlib.import_module("prometheus_client.multiprocess")


_migration: Migration | None = None  # this start's, in the master and (forked) its workers


def _check_worker_class(worker_class: type) -> None:
    """Say once, at start-up, when the workers cannot hand streams to a broadcaster."""
    from gunicorn.workers.ggevent import GeventWorker

    if not issubclass(worker_class, GeventWorker):  # it alone can hand a connection over
        logger.warning(
            "gunicorn's %s worker cannot take streams over: each stream holds a worker "
            "or thread of its own, with no broadcaster; use -k gevent (ticker's default)",
            worker_class.__name__,
        )


def _prompt_gevent_worker(server: Any) -> None:
    """Run ticker's gevent worker where gunicorn's own was asked for (``-k gevent``).

    It is gunicorn's, stopping within 50 ms of a SIGTERM where gunicorn's takes
    up to two seconds (``ticker/worker.py``): however gunicorn is started, a
    deploy's stop lets go of its clients as quickly.
    """
    from gunicorn.workers.ggevent import GeventWorker

    from ticker.worker import GeventWorker as TickerWorker

    if server.worker_class is GeventWorker:
        server.worker_class = TickerWorker


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
    """Start the worker's follower, producer jobs and broadcaster, and its shutdown watch."""
    from gunicorn.workers.ggevent import GeventWorker

    from ticker import lifecycle
    from ticker.cli import at_head
    from ticker.worker import GeventWorker as TickerWorker

    state = app_state(worker)
    if state is None:
        return
    if _migration is not None and not _migration.wait(worker, lambda: at_head(state.engine)):
        return  # stopped before the migrations ended: nothing to start
    lifecycle.start(state, broadcast=isinstance(worker, GeventWorker))
    if not isinstance(worker, TickerWorker):  # which ends them itself, at once
        threading.Thread(target=_end_streams_on_shutdown, args=(worker,), daemon=True).start()


def _end_streams_on_shutdown(worker: Any) -> None:
    # gunicorn waits graceful_timeout for open requests after SIGTERM, and a
    # stream never finishes by itself: end them as soon as the worker stops.
    from ticker import lifecycle

    while worker.alive:
        time.sleep(0.2)
    state = app_state(worker)
    if state is not None:
        lifecycle.end_streams(state)


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the jobs and release the producer lease; end a finished ticker worker at once."""
    from ticker import lifecycle

    state = app_state(worker)
    if state is not None:
        lifecycle.stop(state)
    if getattr(worker, "finished", False):  # ticker's worker, stopped (``ticker/worker.py``)
        worker.exit_now()


def app_state(worker: Any) -> AppState | None:
    """Return the state of the ticker app the worker serves; None if it serves none (yet)."""
    from ticker.state import KEY

    app = getattr(worker, "wsgi", None)
    state: AppState | None = getattr(app, "extensions", {}).get(KEY)
    return state


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's gauges (its open streams); its counters stay in the totals."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """Remove the metrics directory and the migrations' outcome made for this run."""
    remove_multiprocess_dir(multiprocess_dir())
    if _migration is not None:
        _migration.remove()
