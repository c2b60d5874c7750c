"""The append-only event log: the ``ticks`` table and every query on it.

Invariant: ids grow in commit order and are never reused, so a reader that has
seen id N never later finds a committed event below N.  Appends are serialised
(``db.writing``: SQLite's write lock, PostgreSQL's advisory lock held until the
commit is visible) and draw their ids inside that critical section, from
SQLite's ``AUTOINCREMENT`` or PostgreSQL's sequence, neither of which hands an
id out twice, even after the newest rows were pruned.  A naive ``id > N``
reader is therefore safe: no id below the newest visible one can still commit.

``pruned_through`` (in ``log_state``) is the highest id deleted by retention:
a reader resuming below it has missed events.  ``head`` is the highest id ever
committed: the newest row's id, or ``pruned_through`` when retention emptied
the table.  Each append also sends ``NOTIFY ticker_log`` on PostgreSQL, which
wakes the followers of every process at commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Index,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from ticker.config import Retention
from ticker.db import Base, writing
from ticker.events import Event, Tick

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


def head(engine: Engine) -> int:
    """Return the highest id committed to the log (0 when empty)."""
    with engine.connect() as conn:
        return position(conn).head


def append(engine: Engine, batch: Sequence[Tick]) -> list[int]:
    """Append ``batch`` in one transaction and return the new ids in order."""
    with writing(engine) as conn:
        return insert_ticks(conn, batch)


def insert_ticks(conn: Connection, batch: Sequence[Tick]) -> list[int]:
    """Insert ``batch`` within the caller's write transaction; return the ids in order."""
    if not batch:
        return []
    if conn.dialect.name != "postgresql":
        return _insert_sqlite(conn, batch)
    # One statement with four array parameters, on the driver: SQLAlchemy's
    # multi-row VALUES costs more than the insert itself for large batches.
    # Rows are inserted in ORDER BY order, so the sequence hands out ids in the
    # batch's order, and the sorted ids line up with the batch.
    # Binary parameters (%b): text arrays would be quoted element by element.
    rows = driver_rows(
        conn,
        "INSERT INTO ticks (symbol, price, ts, size)"
        " SELECT symbol, price, ts, size"
        " FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[])"
        " WITH ORDINALITY AS batch(symbol, price, ts, size, n) ORDER BY n RETURNING id",
        (
            [t.symbol for t in batch],
            [t.price for t in batch],
            [t.ts for t in batch],
            [t.size for t in batch],
        ),
    )
    ids = sorted(int(row[0]) for row in rows)
    driver_rows(conn, "SELECT pg_notify(?, ?)", (CHANNEL, str(ids[-1])))
    return ids


_SQLITE_ROWS = 2000  # rows per statement: 8,000 parameters, under SQLite's 32,766
_sqlite_inserts: dict[tuple[int, bool], str] = {}


def _insert_sqlite(conn: Connection, batch: Sequence[Tick]) -> list[int]:
    """Insert with multi-row VALUES on the driver, leaving ``size`` out when no tick has one.

    SQLite inserts a VALUES list in its order, and AUTOINCREMENT hands out
    rising ids, so the sorted ids of each statement line up with its rows.
    """
    sized = any(t.size is not None for t in batch)
    ids: list[int] = []
    for start in range(0, len(batch), _SQLITE_ROWS):
        chunk = batch[start : start + _SQLITE_ROWS]
        key = (len(chunk), sized)
        sql = _sqlite_inserts.get(key)
        if sql is None:
            columns, row = (
                ("symbol, price, ts, size", "(?,?,?,?)")
                if sized
                else ("symbol, price, ts", "(?,?,?)")
            )
            sql = (
                f"INSERT INTO ticks ({columns}) VALUES {','.join([row] * len(chunk))} RETURNING id"
            )
            if len(_sqlite_inserts) < 64:
                _sqlite_inserts[key] = sql
        params: list[object] = []
        if sized:
            for t in chunk:
                params += (t.symbol, t.price, t.ts, t.size)
        else:
            for t in chunk:
                params += (t.symbol, t.price, t.ts)
        ids.extend(sorted(int(row[0]) for row in driver_rows(conn, sql, params)))
    return ids


def _events(rows: Iterable[Sequence[object]]) -> list[Event]:
    return list(map(Event._make, rows))


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


def read_after(
    conn: Connection,
    after: int,
    symbols: Sequence[str] | None,
    limit: int,
    upto: int | None = None,
) -> list[Event]:
    """Return up to ``limit`` events with ``after < id [<= upto]`` of ``symbols``, by id."""
    sql = "SELECT id, symbol, price, ts, size FROM ticks WHERE id > ?"
    params: list[object] = [after]
    if upto is not None:
        sql += " AND id <= ?"
        params.append(upto)
    if symbols is not None:
        sql += f" AND symbol IN ({', '.join('?' * len(symbols))})"
        params.extend(symbols)
    params.append(limit)
    return list(map(Event._make, driver_rows(conn, sql + " ORDER BY id LIMIT ?", params)))


def read_before(conn: Connection, symbol: str, after: int, before: int, limit: int) -> list[Event]:
    """Return the newest ``limit`` events of ``symbol`` with ``after < id < before``, by id."""
    query = (
        select(*_COLUMNS)
        .where(ticks.c.symbol == symbol, ticks.c.id > after, ticks.c.id < before)
        .order_by(ticks.c.id.desc())
        .limit(limit)
    )
    return _events(reversed(list(conn.execute(query))))


def latest(conn: Connection, symbols: Sequence[str], upto: int | None = None) -> list[Event]:
    """Return the newest event (``id <= upto``) of each of ``symbols`` that has one, in order."""
    found = []
    for symbol in symbols:
        query = select(*_COLUMNS).where(ticks.c.symbol == symbol)
        if upto is not None:
            query = query.where(ticks.c.id <= upto)
        row = conn.execute(query.order_by(ticks.c.id.desc()).limit(1)).first()
        if row is not None:
            found.extend(_events([row]))
    return found


def latest_any(conn: Connection) -> Event | None:
    """Return the newest event of the log, or None when it is empty."""
    row = conn.execute(select(*_COLUMNS).order_by(ticks.c.id.desc()).limit(1)).first()
    return None if row is None else _events([row])[0]


def prune(engine: Engine, retention: Retention, now_us: int, batch: int = 5000) -> int:
    """Delete the oldest events beyond ``retention`` in short batches; return how many.

    The log is cut from its old end: events go in id order while they are older
    than the age limit or beyond the count limit, so ids stay a contiguous
    suffix and ``pruned_through`` names exactly what a reader may have missed.
    Nothing above the rollup watermark is deleted: each batch first rolls the
    events it is about to delete into the candles, in its own transaction.
    """
    if not retention:
        return 0
    deleted = 0
    while True:
        with writing(engine) as conn:
            pos = position(conn)
            oldest = list(
                conn.execute(
                    select(ticks.c.id, ticks.c.ts)
                    .where(ticks.c.id > pos.pruned_through)
                    .order_by(ticks.c.id)
                    .limit(batch)
                )
            )
            cut = pos.pruned_through
            if retention.max_events is not None:
                cut = max(cut, pos.head - retention.max_events)
            if retention.max_age is not None:
                horizon = now_us - int(retention.max_age * 1_000_000)
                for row_id, ts in oldest:
                    if ts >= horizon:
                        break
                    cut = max(cut, int(row_id))
            if not oldest:
                return deleted
            cut = min(cut, int(oldest[-1][0]))
            if cut <= pos.pruned_through:
                return deleted
            # Roll up in the same transaction as the delete: a crash in between
            # cannot lose an event from the candles.  (candles reads the log.)
            from ticker.candles import fold_through

            fold_through(conn, cut)
            cut = min(cut, rolled_up(conn))  # never delete what the candles do not hold yet
            if cut <= pos.pruned_through:
                return deleted
            result = conn.execute(delete(ticks).where(ticks.c.id <= cut))
            deleted += result.rowcount
            write_state(conn, "pruned_through", cut)


def write_state(conn: Connection, name: str, value: int) -> None:
    """Set the named counter of ``log_state``, within the caller's write transaction."""
    changed = conn.execute(update(LogState).where(LogState.name == name).values(value=value))
    if changed.rowcount == 0:
        conn.execute(insert(LogState).values(name=name, value=value))
