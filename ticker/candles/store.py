"""The ``candles`` table: rolled-up buckets of every interval, and the rollup that keeps it.

Invariant: the candles hold exactly the events with ``id <= rolled_up`` (the
watermark in ``log_state``), each counted once.  ``fold_through`` reads the
events above the watermark, merges them into the stored rows and moves the
watermark, all inside the caller's write transaction (``db.writing`` with
``CANDLE_LOCK``, which serialises the writers of the candles without holding
up appends): a crash before the commit leaves rows and watermark as they were,
and the next rollup starts from the same id.  Appends are serialised, and ids
become visible in commit order, so no event at or below the watermark can
still commit later: a tick posted late, with a ``ts`` in a bucket already
rolled up, has an id above the watermark and is folded in by the next rollup,
once.  Readers merge the rows with the raw events above the watermark, from
one snapshot (``reading``).  In the producer's process the events to fold come
from the follower's latest pages (``recent``) rather than a second read.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import BigInteger, Connection, Engine, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from ticker import log
from ticker.candles.aggregate import WIDTHS, Candle, coarsen, decimal_text, fold
from ticker.candles.recent import RecentEvents
from ticker.db import CANDLE_LOCK, Base, writing

logger = logging.getLogger(__name__)

BATCH = 20_000  # events read per step of a rollup
PRUNE_BATCH = 5_000  # candle rows deleted per transaction
MAX_TAIL = 20_000  # events above the watermark a question may merge before it rolls up
CATCH_UP_BUDGET = 1.0  # seconds of rollup one question may do


class CandleRow(Base):
    """A row of ``candles``: one bucket of one symbol at one width, with its merge keys."""

    __tablename__ = "candles"
    __table_args__ = (Index(None, "width", "start"),)

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    width: Mapped[int] = mapped_column(Integer, primary_key=True)  # seconds
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # microseconds
    open: Mapped[str] = mapped_column(String(40))
    high: Mapped[str] = mapped_column(String(40))
    low: Mapped[str] = mapped_column(String(40))
    close: Mapped[str] = mapped_column(String(40))
    volume: Mapped[str] = mapped_column(String(80))
    ticks: Mapped[int] = mapped_column(BigInteger)
    first_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    open_ts: Mapped[int] = mapped_column(BigInteger)
    open_id: Mapped[int] = mapped_column(BigInteger)
    close_ts: Mapped[int] = mapped_column(BigInteger)
    close_id: Mapped[int] = mapped_column(BigInteger)
    high_id: Mapped[int] = mapped_column(BigInteger)
    low_id: Mapped[int] = mapped_column(BigInteger)


candles_table = cast(Table, CandleRow.__table__)
FIELDS = (
    "start, open, high, low, close, volume, ticks, first_id, last_id,"
    " open_ts, open_id, close_ts, close_id, high_id, low_id"
)
_NAMES = FIELDS.replace(" ", "").split(",")
_ON_CONFLICT = " ON CONFLICT (symbol, width, start) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _NAMES[1:]
)
_UPSERT = (
    f"INSERT INTO candles (symbol, width, {FIELDS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + _ON_CONFLICT
)
# PostgreSQL: one statement with an array per column, as the log's appends do.
_TYPES = ["text", "int", "bigint", *["text"] * 5, *["bigint"] * 9]
_PG_UPSERT = (
    f"INSERT INTO candles (symbol, width, {FIELDS}) SELECT * FROM unnest("
    + ", ".join(f"?::{t}[]" for t in _TYPES)
    + ")"
    + _ON_CONFLICT
)


def from_row(row: Sequence[Any]) -> Candle:
    """Build a :class:`Candle` from the columns named in ``FIELDS``."""
    (start, open_, high, low, close, volume, ticks, first_id, last_id,
     open_ts, open_id, close_ts, close_id, high_id, low_id) = row  # fmt: skip
    return Candle(
        int(start), open_, high, low, close, Decimal(volume), int(ticks), int(first_id),
        int(last_id), int(open_ts), int(open_id), int(close_ts), int(close_id), int(high_id),
        int(low_id), Decimal(high), Decimal(low),
    )  # fmt: skip


def _params(symbol: str, width: int, c: Candle) -> tuple[object, ...]:
    return (
        symbol, width, c.start, c.open, c.high, c.low, c.close, decimal_text(c.volume), c.ticks,
        c.first_id, c.last_id, c.open_ts, c.open_id, c.close_ts, c.close_id, c.high_id, c.low_id,
    )  # fmt: skip


def _sql(conn: Connection, sql: str) -> str:
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


def rows(conn: Connection, sql: str, params: Sequence[object]) -> list[Candle]:
    """Run a ``SELECT {FIELDS} FROM candles ...`` on the driver and return its candles."""
    return [from_row(r) for r in log.driver_rows(conn, sql, params)]


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """Open a read transaction that sees one snapshot, candles and raw events alike.

    SQLite's read transaction already does; PostgreSQL's READ COMMITTED would
    give each statement its own, so a rollup committing between reading the
    watermark and reading the rows would count its events twice.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _load(conn: Connection, width: int, keys: Sequence[tuple[str, int]]) -> dict[Any, Candle]:
    """Return the stored candles of ``keys`` (symbol, start) at ``width``."""
    found: dict[Any, Candle] = {}
    if conn.dialect.name == "postgresql":
        # One statement with two array parameters: a query per key costs more than the rollup.
        sql = (
            f"SELECT c.symbol, {', '.join('c.' + f for f in _NAMES)} FROM candles c"
            " JOIN unnest(?::text[], ?::bigint[]) AS k(symbol, start)"
            " ON c.symbol = k.symbol AND c.start = k.start WHERE c.width = ?"
        )
        for row in log.driver_rows(conn, sql, ([k[0] for k in keys], [k[1] for k in keys], width)):
            found[(row[0], int(row[1]))] = from_row(row[1:])
        return found
    by_symbol: dict[str, list[int]] = defaultdict(list)
    for symbol, start in keys:
        by_symbol[symbol].append(start)
    for symbol, starts in by_symbol.items():
        for i in range(0, len(starts), 500):
            chunk = starts[i : i + 500]
            sql = (
                f"SELECT {FIELDS} FROM candles WHERE symbol = ? AND width = ?"
                f" AND start IN ({', '.join('?' * len(chunk))})"
            )
            for candle in rows(conn, sql, [symbol, width, *chunk]):
                found[(symbol, candle.start)] = candle
    return found


def _write(conn: Connection, params: list[tuple[object, ...]]) -> None:
    """Insert or replace the candles of ``params`` (rows of ``_params``)."""
    if not params:
        return
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            columns = [list(c) for c in zip(*params, strict=True)]
            cursor.execute(_PG_UPSERT.replace("?", "%b"), columns)  # binary: no quoting
        else:
            cursor.executemany(_UPSERT, params)
    finally:
        cursor.close()


def _fold_events(conn: Connection, events: Sequence[Any]) -> None:
    """Merge ``events`` into the stored candles of every width (read, merge, write)."""
    level = fold(events, WIDTHS[0])
    for index, width in enumerate(WIDTHS):
        if index:
            level = coarsen(level, width)
        stored = _load(conn, width, list(level))
        params = []
        for key, new in level.items():
            have = stored.get(key)
            if have is not None:
                have.merge(new)
                new = have
            params.append(_params(key[0], width, new))
        _write(conn, params)


def fold_through(
    conn: Connection, upto: int | None = None, recent: RecentEvents | None = None
) -> int:
    """Roll the events with ``rolled_up < id [<= upto]`` into the candles; return how many.

    Runs in the caller's write transaction, which must hold the candles' lock
    (``db.writing(engine, CANDLE_LOCK)``; the log's lock is not needed: ids
    become visible in commit order, so no event at or below the head it reads
    can still commit), and moves the watermark in it: to ``upto`` when given
    (every id up to it is then in the candles, or will never exist), else to
    the newest id read.  The events come from ``recent`` where it holds them,
    else from the log.
    """
    mark = start = log.rolled_up(conn)
    total = 0
    while upto is None or mark < upto:
        events = None if recent is None or upto is None else recent.between(mark, upto, BATCH)
        if events and log.mark(conn, events[-1].id).ts_at != events[-1].ts:
            assert recent is not None  # the log moved back since the follower read these
            recent.forget()
            events = None
        from_log = events is None
        if events is None:
            events = log.read_after(conn, mark, None, BATCH, upto)
        if not events:
            break
        _fold_events(conn, events)
        mark = events[-1].id
        total += len(events)
        if from_log and len(events) < BATCH:
            break  # the log has nothing more up to ``upto``
    if upto is not None:
        mark = max(mark, upto)
    if mark != start:
        log.write_state(conn, log.ROLLED_UP, mark)
    return total


def rollup(engine: Engine, budget: float | None = None, recent: RecentEvents | None = None) -> int:
    """Roll every event not yet in the candles into them, in batches; return how many.

    Each batch is its own transaction under the candles' lock, so on
    PostgreSQL appends never wait for it (on SQLite, at most one batch), and
    other greenlets run between batches.  With ``budget`` (seconds), stop
    after the batch that overran it.  ``recent``: the follower's latest
    events, read instead of the log where they cover what is to fold.
    """
    total = 0
    started = time.monotonic()
    while True:
        with writing(engine, CANDLE_LOCK) as conn:
            head = log.position(conn).head
            rolled = log.rolled_up(conn)
            if rolled > head:  # the log moved back: the ids after head will be handed out again
                logger.warning("the log moved back below the rollup mark: %d to %d", rolled, head)
                log.write_state(conn, log.ROLLED_UP, head)
                rolled = head
            upto = min(head, rolled + BATCH)
            done = fold_through(conn, upto, recent)
        if recent is not None:  # committed: the candles hold them now
            recent.forget_through(upto)
        total += done
        if upto >= head or (budget is not None and time.monotonic() - started > budget):
            return total
        time.sleep(0)  # under gevent, let requests run: SQLite's calls never yield


def catch_up(engine: Engine) -> int:
    """Roll up now if the events above the watermark are too many to merge into answers.

    The producer's rollup job keeps that tail to a second or so of events; this
    covers a deployment where no producer runs (``TICKER_PRODUCER=off`` without
    ``ticker produce``), so that no question reads a long tail of the log.
    """
    with engine.connect() as conn:
        behind = log.position(conn).head - log.rolled_up(conn)
    return rollup(engine, CATCH_UP_BUDGET) if behind > MAX_TAIL else 0


def prune(engine: Engine, keep: dict[int, float | None], now_us: int) -> int:
    """Delete candles whose bucket started more than ``keep[width]`` seconds ago; return how many.

    ``None`` keeps a width for ever.  Deletes in batches of their own transactions.
    """
    deleted = 0
    for width, age in keep.items():
        if age is None:
            continue
        horizon = now_us - int(age * 1_000_000)
        while True:
            with writing(engine, CANDLE_LOCK) as conn:
                found = log.driver_rows(
                    conn,
                    "SELECT start FROM candles WHERE width = ? AND start < ?"
                    " ORDER BY start LIMIT 1 OFFSET ?",
                    (width, horizon, PRUNE_BATCH - 1),
                )
                cut = horizon if not found else int(found[0][0]) + 1
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    cursor.execute(
                        _sql(conn, "DELETE FROM candles WHERE width = ? AND start < ?"),
                        (width, cut),
                    )
                    deleted += max(0, cursor.rowcount)
                finally:
                    cursor.close()
            if not found:
                break
    return deleted
