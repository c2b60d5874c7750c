"""The ``ticks`` and ``log_state`` tables, the log's counters and its driver-level queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import BigInteger, Connection, Engine, Index, Integer, String, Table, insert, update
from sqlalchemy.orm import Mapped, mapped_column

from ticker.db import Base

_ID = BigInteger().with_variant(Integer(), "sqlite")
CHANNEL = "ticker_log"  # PostgreSQL NOTIFY channel: a new head was committed
ROLLED_UP = "rolled_up"  # log_state: the candles hold every event with an id up to this


class EventRow(Base):
    """A row of the ``ticks`` table: one event of the log (the table keeps its name)."""

    __tablename__ = "ticks"
    __table_args__ = (Index(None, "symbol", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    symbol: Mapped[str] = mapped_column(String(32))
    price: Mapped[str] = mapped_column(String(40))
    ts: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[str | None] = mapped_column(String(40))  # None: the source gave no size


class LogState(Base):
    """Named counters of the log (``pruned_through``, ``rolled_up``)."""

    __tablename__ = "log_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


ticks = cast(Table, EventRow.__table__)
_COLUMNS = (ticks.c.id, ticks.c.symbol, ticks.c.price, ticks.c.ts, ticks.c.size)


@dataclass(frozen=True)
class Position:
    """Where the log stands: its head and the highest id retention deleted."""

    head: int
    pruned_through: int


def read_state(conn: Connection, name: str) -> int:
    """Return the named counter of ``log_state`` (0 when unset)."""
    rows = driver_rows(conn, "SELECT value FROM log_state WHERE name = ?", (name,))
    return int(rows[0][0] or 0) if rows else 0


def rolled_up(conn: Connection) -> int:
    """Return the rollup watermark: every event with an id up to it is in the candles."""
    return read_state(conn, ROLLED_UP)


def pruned_through(conn: Connection) -> int:
    """Return the highest id retention has deleted (0 when none)."""
    return read_state(conn, "pruned_through")


def position(conn: Connection) -> Position:
    """Return the head and prune horizon.

    The newest id is read before the horizon: under PostgreSQL's READ COMMITTED
    each statement sees its own snapshot, and in this order a prune that
    empties the table in between still leaves ``head`` where it was.
    """
    newest = driver_rows(conn, "SELECT max(id) FROM ticks", ())[0][0] or 0
    pruned = pruned_through(conn)
    return Position(head=max(int(newest), pruned), pruned_through=pruned)


@dataclass(frozen=True)
class Mark:
    """The log as the follower checks it after each read: its ends, and a row seen before."""

    head: int
    pruned_through: int
    ts_at: int | None  # the ``ts`` of the row asked about; None when there is no such row
    head_ts: int | None  # the ``ts`` of the newest row; None when the table is empty


def mark(conn: Connection, id: int) -> Mark:
    """Return the head, the prune horizon, and the ``ts`` of row ``id`` and of the newest row.

    All from one statement, so one snapshot.  A follower that saw row ``id``
    with some ``ts`` can tell from this that the log moved back (a restored
    backup, a failover to a standby that missed commits): the head is below
    ``id``, or row ``id`` is gone or is another event, while retention has not
    deleted it.  (A log moves back by losing its newest rows, so checking the
    newest row seen covers every row below it.)
    """
    rows = driver_rows(
        conn,
        "SELECT (SELECT max(id) FROM ticks),"
        " (SELECT value FROM log_state WHERE name = 'pruned_through'),"
        " (SELECT ts FROM ticks WHERE id = ?),"
        " (SELECT ts FROM ticks ORDER BY id DESC LIMIT 1)",
        (id,),
    )
    newest, pruned, ts, head_ts = rows[0]
    pruned = int(pruned or 0)
    return Mark(
        max(int(newest or 0), pruned),
        pruned,
        None if ts is None else int(ts),
        None if head_ts is None else int(head_ts),
    )


def head(engine: Engine) -> int:
    """Return the highest id committed to the log (0 when empty)."""
    with engine.connect() as conn:
        return position(conn).head


def driver_rows(conn: Connection, sql: str, params: Sequence[object]) -> list[Any]:
    """Run ``sql`` (``?`` placeholders) on the driver's own cursor and return its rows.

    For the reads that replay and the follower repeat thousands of times a
    second, and PostgreSQL's appends: SQLAlchemy's statement cache keys and
    row objects cost more than the query itself there.  The columns come back
    as the driver gives them (int, str), which is what an ``Event`` holds.
    """
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def write_state(conn: Connection, name: str, value: int) -> None:
    """Set the named counter of ``log_state``, within the caller's write transaction."""
    changed = conn.execute(update(LogState).where(LogState.name == name).values(value=value))
    if changed.rowcount == 0:
        conn.execute(insert(LogState).values(name=name, value=value))
