"""Appends: ids drawn in the one writer's transaction, in the batch's order."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy import Connection, Engine

from ticker.db import WRITE_LOCK, writing
from ticker.events import Tick
from ticker.log.table import CHANNEL, driver_rows


def append(engine: Engine, batch: Sequence[Tick]) -> list[int]:
    """Append ``batch`` in one transaction and return the new ids in order."""
    with writing(engine) as conn:
        return insert_ticks(conn, batch)


def append_after(engine: Engine, batch: Sequence[Tick]) -> tuple[int, list[int]]:
    """Append ``batch`` like :func:`append`; also return the newest id before it.

    Read under the writer's lock, so every event with ``before < id`` up to
    the last new id is in ``batch``: this process can hand the batch to its
    hub without reading it back, when the hub stands at ``before``.
    """
    with writing(engine) as conn:
        return newest_id(conn), insert_ticks(conn, batch)


def newest_id(conn: Connection) -> int:
    """Return the newest id in the table (0 when empty); under the lock, the id before an append."""
    return int(driver_rows(conn, "SELECT coalesce(max(id), 0) FROM ticks", ())[0][0])


def insert_ticks(conn: Connection, batch: Sequence[Tick]) -> list[int]:
    """Insert ``batch`` within the caller's write transaction; return the ids in order.

    On PostgreSQL it also sends ``NOTIFY ticker_log`` with the last id (delivered at commit).
    """
    ids = insert_rows(conn, batch)
    if ids:
        notify(conn, ids[-1])
    return ids


def notify(conn: Connection, last: int) -> None:
    """Wake every process's follower at commit (PostgreSQL; a no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        driver_rows(conn, "SELECT pg_notify(?, ?)", (CHANNEL, str(last)))


def insert_rows(conn: Connection, batch: Sequence[Tick]) -> list[int]:
    """Insert ``batch`` within the caller's write transaction, sending no notification."""
    if not batch:
        return []
    if conn.dialect.name != "postgresql":
        return _insert_sqlite(conn, batch)
    # One statement with four array parameters, on the driver: SQLAlchemy's
    # multi-row VALUES costs more than the insert itself for large batches.
    # Rows are inserted in ORDER BY order, so the sequence hands out ids in the
    # batch's order, and the sorted ids line up with the batch.
    # Binary parameters (%b): text arrays would be quoted element by element.
    rows = driver_rows(conn, _PG_INSERT, _pg_columns(batch))
    return sorted(int(row[0]) for row in rows)


_PG_INSERT = (
    "INSERT INTO ticks (symbol, price, ts, size)"
    " SELECT symbol, price, ts, size"
    " FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[])"
    " WITH ORDINALITY AS batch(symbol, price, ts, size, n) ORDER BY n RETURNING id"
)


def _pg_columns(batch: Sequence[Tick]) -> tuple[list[Any], ...]:
    return (
        [t.symbol for t in batch],
        [t.price for t in batch],
        [t.ts for t in batch],
        [t.size for t in batch],
    )


def lock_insert_commit(conn: Connection, batch: Sequence[Tick]) -> tuple[int, list[int]]:
    """Take the writer's lock, insert ``batch`` and commit; return the id before it and its ids.

    ``conn`` has no transaction open.  SQLite: ``BEGIN IMMEDIATE`` (the lock),
    the newest id, the insert, ``COMMIT``.  PostgreSQL: the lock, the newest
    id, the insert, the notification and ``COMMIT`` go to the server in one
    pipeline, one round trip, executed in order, each statement after the lock
    is held (so under READ COMMITTED the id before is read once every earlier
    append is visible); on the driver's connection, as SQLAlchemy's
    transaction would have sent them.
    """
    if not batch:
        raise ValueError("nothing to insert")
    if conn.dialect.name != "postgresql":
        with conn.begin():
            return newest_id(conn), insert_rows(conn, batch)
    raw: Any = conn.connection.dbapi_connection
    lock, before, insert, wake = (raw.cursor() for _ in range(4))
    try:
        with raw.pipeline():
            lock.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            before.execute("SELECT coalesce(max(id), 0) FROM ticks")
            insert.execute(_PG_INSERT, _pg_columns(batch))
            # Under the lock, the newest row is this batch's last.
            wake.execute("SELECT pg_notify(%s, (SELECT max(id) FROM ticks)::text)", (CHANNEL,))
            raw.commit()
        return int(before.fetchone()[0]), sorted(int(row[0]) for row in insert.fetchall())
    except BaseException:
        with suppress(Exception):  # the error that failed it is the one to raise
            raw.rollback()
        raise
    finally:
        for cursor in (lock, before, insert, wake):
            cursor.close()


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
