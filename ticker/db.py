"""The database engine: one per app, created from ``TICKER_DATABASE_URL``.

Invariant: writes to the log are serialised, one transaction at a time, from
its first statement to its commit.  That is what makes ids visible in commit
order (see ``log``).

- SQLite runs in WAL mode so readers never block the writer.  The driver's own
  transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself,
  so a read sees one snapshot from its first statement to its end, and a
  writer takes the write lock up front with ``BEGIN IMMEDIATE``.  No commit
  checkpoints the WAL (``wal_autocheckpoint=0``): a :class:`Checkpointer`, an
  OS thread started by the first write transaction of each process, does it
  every second off the request path, so the WAL stays bounded in every mode
  (``ticker serve``, ``ticker produce``, the CLI, tests).
- PostgreSQL (psycopg 3, which cooperates with gevent on its own) runs at READ
  COMMITTED; a writer takes a transaction-scoped advisory lock first.  The
  lock is released only after the commit is visible, so the next writer draws
  its ids from the sequence after every earlier id is visible.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, func, make_url, select
from sqlalchemy.orm import DeclarativeBase

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose metadata names constraints the same way every time."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Keys of the advisory locks on PostgreSQL: the one that serialises writers of
# the log ("tick"), and the one that serialises writers of the candles and their
# watermark ("cndl"), so that a rollup never holds up appends.
WRITE_LOCK = 0x7469636B
CANDLE_LOCK = 0x636E646C

CONNECT_TIMEOUT = 5  # seconds for a PostgreSQL connection to be made, unless the URL says

# SQLite's WAL: checkpointed every CHECKPOINT_INTERVAL seconds without waiting
# for anyone (PASSIVE).  Under a flood of writes a passive checkpoint never
# catches up (the writers append while it copies), so past WAL_LIMIT bytes it
# also runs RESTART, which holds writers off while it copies the rest and waits
# up to RESTART_WAIT_MS for readers, so that the next writer starts the WAL over.
# A WAL that starts over is truncated back to JOURNAL_SIZE_LIMIT bytes.
CHECKPOINT_INTERVAL = 1.0
WAL_LIMIT = 32 * 1024 * 1024
RESTART_WAIT_MS = 1000
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
IDLE_ROUNDS = 2  # checkpoints with nothing new before the thread ends
_checkpointers: weakref.WeakKeyDictionary[Engine, Checkpointer] = weakref.WeakKeyDictionary()


def normalise_url(url: str) -> str:
    """Make ``postgresql://`` URLs use psycopg 3 rather than SQLAlchemy's default driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """Create an engine for ``url``, tuned for SQLite or PostgreSQL.

    ``pool_size`` and ``max_overflow``: the connections it keeps, and the most
    it opens beyond them; a caller waits up to 30 s for one past that.
    """
    url = normalise_url(url)
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": 30}
    if not url.startswith("sqlite"):
        # A host that takes the connection and never answers fails it, unless the URL says.
        named = "connect_timeout" in make_url(url).query
        connect = {} if named else {"connect_timeout": CONNECT_TIMEOUT}
        return create_engine(url, pool_pre_ping=True, connect_args=connect, **pool)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "isolation_level": None, "timeout": 30},
        **pool,
    )
    database = engine.url.database
    checkpointer = None
    if database and database != ":memory:" and not database.startswith("file:"):
        checkpointer = _checkpointers[engine] = Checkpointer(Path(database), engine)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        if checkpointer is not None:  # else SQLite's own, on the commit that crosses 1,000 pages
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("begin", "DEFERRED")
        if mode == "IMMEDIATE" and checkpointer is not None:
            checkpointer.ensure_running()
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def make_stream_engine(url: str, readers: int) -> Engine:
    """Create the engine the streams read the log through: ``readers`` connections at most.

    A pool of their own, apart from the app's: when thousands of clients
    reconnect at once and replay from the log, they queue for these
    connections, and publishing, the producer and ``/healthz`` never wait
    behind them for one.
    """
    return make_engine(url, pool_size=readers, max_overflow=0)


def checkpointer(engine: Engine) -> Checkpointer | None:
    """Return the WAL checkpointer of a SQLite ``engine`` (None for PostgreSQL, memory)."""
    return _checkpointers.get(engine)


class Checkpointer:
    """Checkpoint one SQLite file's WAL every ``interval`` seconds, in an OS thread of this process.

    sqlite3 releases the GIL while it checkpoints, and under gevent the thread
    is a real one (gevent's original ``start_new_thread``), so neither requests
    nor greenlets wait for it.  It runs while the engine lives, the file is
    there and writes come (``IDLE_ROUNDS`` rounds with nothing new end it); the
    next write transaction, also a forked child's first, starts it again.
    """

    def __init__(self, path: Path, engine: Engine, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0  # checkpoints run, for tests
        self.restart_frames = 0  # WAL_LIMIT in pages, once the page size is known
        self._engine = weakref.ref(engine)
        self._pid = 0  # the process whose thread runs; 0: none yet
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start this process's checkpoint thread, unless it runs already."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._pid = pid
        _start_native_thread(self._run)

    def _run(self) -> None:
        sleep = _original_sleep()
        pid = os.getpid()
        wal = Path(f"{self.path}-wal")
        due = time.monotonic() + self.interval
        failed = ""  # the last failure logged: a full disk is said once, not every second
        seen, idle = -1, 0
        while self._pid == pid and self._engine() is not None and idle < IDLE_ROUNDS:
            sleep(self.interval / 10)
            # A flood of writes grows the file past WAL_LIMIT within the second:
            # checkpoint at once then (a WAL that started over was cut back below it).
            if time.monotonic() < due and not _larger(wal, WAL_LIMIT):
                continue
            due = time.monotonic() + self.interval
            try:
                frames = self.checkpoint()
            except Exception as exc:  # a full disk, a file made read-only: try again
                if str(exc) != failed:
                    logger.warning("WAL checkpoint of %s failed (%s); trying again", self.path, exc)
                failed = str(exc)
                continue
            failed = ""
            if frames is None:
                break
            # Nothing written since the last round, all of it copied: the thread
            # ends, and the next write transaction starts another.
            idle = idle + 1 if frames == seen >= 0 else 0
            seen = frames
        if self._pid == pid:
            self._pid = 0

    def checkpoint(self) -> int | None:
        """Checkpoint the WAL once, without waiting unless it is past ``WAL_LIMIT``.

        Returns the frames the WAL held, all copied unless another checkpoint
        or a reader stood in the way, or None when the database file is gone.
        """
        if not self.path.exists():
            return None
        uri = f"file:{quote(str(self.path))}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=0")
            # A passive checkpoint copies the frames there were when it began; a
            # writer that appended meanwhile keeps the WAL from starting over.
            _busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not self.restart_frames:
                page = int(conn.execute("PRAGMA page_size").fetchone()[0])
                self.restart_frames = WAL_LIMIT // page
            if frames > self.restart_frames:
                self._restart(conn)
            self.checkpoints += 1
        finally:
            conn.close()
        return int(frames) if done == frames else -1

    def _restart(self, conn: sqlite3.Connection) -> None:
        """Checkpoint everything and let the next writer start the WAL over, waiting a little.

        SQLite's busy handler sleeps in steps of milliseconds and so rarely
        finds a flood of short write transactions between two of them: retry
        without it, every half a millisecond, for up to ``RESTART_WAIT_MS``.
        """
        sleep = _original_sleep()
        end = time.monotonic() + RESTART_WAIT_MS / 1000
        while True:
            busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if not busy or time.monotonic() > end:
                return
            sleep(0.0005)


def _larger(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size > size
    except FileNotFoundError:
        return False


def _start_native_thread(target: Callable[[], None]) -> None:
    """Run ``target`` in an OS thread, also in a process gevent has patched."""
    from ticker.lifecycle import gevent_patched

    if gevent_patched():
        from gevent import monkey

        monkey.get_original("_thread", "start_new_thread")(target, ())
    else:
        threading.Thread(target=target, name="sqlite-checkpoint", daemon=True).start()


def _original_sleep() -> Callable[[float], None]:
    """Return ``time.sleep`` as the OS has it, not gevent's (this runs in an OS thread)."""
    from ticker.lifecycle import gevent_patched

    if gevent_patched():
        from gevent import monkey

        sleep: Callable[[float], None] = monkey.get_original("time", "sleep")
        return sleep
    return time.sleep


@contextmanager
def writing(engine: Engine, lock: int = WRITE_LOCK) -> Iterator[Connection]:
    """Open a write transaction holding the writer's lock, and commit it on exit.

    On PostgreSQL ``lock`` picks the advisory lock: :data:`WRITE_LOCK` for the
    log, :data:`CANDLE_LOCK` for a transaction that writes only the candles.
    SQLite has one write lock for the whole file whichever is asked for.
    """
    with engine.connect() as conn:
        conn.execution_options(begin="IMMEDIATE")
        with conn.begin():
            take(conn, lock)
            yield conn


def take(conn: Connection, lock: int) -> None:
    """Take PostgreSQL's advisory ``lock`` until the end of ``conn``'s transaction.

    A no-op on SQLite, where a write transaction already excludes every other.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(lock)))
