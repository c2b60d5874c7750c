"""Reads: pages after an id, before an id, and the newest events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select

from ticker.events import Event
from ticker.log.table import _COLUMNS, driver_rows, ticks


def _events(rows: Iterable[Sequence[object]]) -> list[Event]:
    return list(map(Event._make, rows))


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


def newest(conn: Connection, count: int, upto: int) -> list[Event]:
    """Return the newest ``count`` events with ``id <= upto``, by id (a warm hub's window)."""
    rows = driver_rows(
        conn,
        "SELECT id, symbol, price, ts, size FROM ticks WHERE id <= ? ORDER BY id DESC LIMIT ?",
        (upto, count),
    )
    return list(map(Event._make, reversed(rows)))


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
