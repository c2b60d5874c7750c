"""The database engine: one per app, created from ``TICKER_DATABASE_URL``.

Invariant: writes to the log are serialised, one transaction at a time, from
its first statement to its commit.  That is what makes ids visible in commit
order (see ``log``).

- SQLite runs in WAL mode so readers never block the writer.  The driver's own
  transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself,
  so a read sees one snapshot from its first statement to its end, and a
  writer takes the write lock up front with ``BEGIN IMMEDIATE``.
- PostgreSQL (psycopg 3, which cooperates with gevent on its own) runs at READ
  COMMITTED; a writer takes a transaction-scoped advisory lock first.  The
  lock is released only after the commit is visible, so the next writer draws
  its ids from the sequence after every earlier id is visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, func, select
from sqlalchemy.orm import DeclarativeBase

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
        return create_engine(url, pool_pre_ping=True, **pool)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "isolation_level": None, "timeout": 30},
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("begin", "DEFERRED")
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
