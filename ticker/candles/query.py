"""Answer candle and 24-hour questions: stored rows merged with the raw events not rolled up yet.

Every answer is read in one snapshot (``store.reading``): the watermark, the
rows and the events above it, so an event is counted by exactly one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Connection

from ticker import log
from ticker.candles.aggregate import EXACT, US, Candle, bucket, decimal_text, fold, merge_into
from ticker.candles.store import FIELDS, rows
from ticker.events import Event, format_ts

TAIL_PAGE = 50_000  # events above the watermark read per page
DAY = 86_400 * US
MINUTE = 60 * US
HOUR = 3600 * US
_CENT = Decimal("0.01")


def _tail(conn: Connection, mark: int, symbols: Sequence[str]) -> list[Event]:
    """Return every event of ``symbols`` above the watermark ``mark``, by id."""
    found: list[Event] = []
    after = mark
    while True:
        page = log.read_after(conn, after, symbols, TAIL_PAGE)
        found.extend(page)
        if len(page) < TAIL_PAGE:
            return found
        after = page[-1].id


def read(
    conn: Connection, symbol: str, width: int, start: int | None, end: int, limit: int
) -> list[Candle]:
    """Return the candles of ``symbol`` with ``start <= bucket start < end``, oldest first.

    With ``start``, the oldest ``limit`` of them; without, the newest ``limit``.
    """
    mark = log.rolled_up(conn)
    where = "FROM candles WHERE symbol = ? AND width = ? AND start < ?"
    params: list[object] = [symbol, width, end]
    if start is not None:
        stored = rows(
            conn,
            f"SELECT {FIELDS} {where} AND start >= ? ORDER BY start LIMIT ?",
            [*params, start, limit],
        )
    else:
        stored = rows(
            conn, f"SELECT {FIELDS} {where} ORDER BY start DESC LIMIT ?", [*params, limit]
        )
    low = start if start is not None else -(2**63)
    events = [e for e in _tail(conn, mark, [symbol]) if low <= bucket(e.ts, width) < end]
    by_start = {c.start: c for c in stored}
    merge_into(by_start, fold(events, width).values())
    ordered = [by_start[s] for s in sorted(by_start)]
    return ordered[:limit] if start is not None else ordered[-limit:]


def candle_json(candle: Candle) -> dict[str, Any]:
    """Return the API shape of a candle."""
    return {
        "start": format_ts(candle.start),
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": decimal_text(candle.volume),
        "ticks": candle.ticks,
        "first_id": candle.first_id,
        "last_id": candle.last_id,
    }


@dataclass(frozen=True)
class Window:
    """The rolling 24 hours: the 1,440 one-minute buckets up to the current one."""

    start: int  # microseconds, on a minute
    hours_from: int  # first whole hour in the window: 1h rows from here, 1m rows before

    @classmethod
    def ending(cls, now_us: int) -> Window:
        """Return the window whose last minute holds ``now_us``."""
        start = bucket(now_us, 60) + MINUTE - DAY
        return cls(start, -(-start // HOUR) * HOUR)


def day_stats(conn: Connection, symbols: Sequence[str], now_us: int) -> dict[str, Candle | None]:
    """Return each symbol's aggregate over the rolling 24 hours (None without a tick in it).

    From at most 59 one-minute rows and 25 one-hour rows per symbol, plus the
    events above the watermark: never a scan of a day of ticks.
    """
    window = Window.ending(now_us)
    mark = log.rolled_up(conn)
    found: dict[str, Candle | None] = {}
    sql = (
        f"SELECT {FIELDS} FROM candles WHERE symbol = ? AND width = 60 AND start >= ? AND start < ?"
        f" UNION ALL SELECT {FIELDS} FROM candles WHERE symbol = ? AND width = 3600 AND start >= ?"
    )
    for symbol in symbols:
        total: dict[int, Candle] = {}
        parts = rows(
            conn, sql, [symbol, window.start, window.hours_from, symbol, window.hours_from]
        )
        merge_into(total, (p.copy(0) for p in parts))
        found[symbol] = total.get(0)
    late: dict[str, list[Event]] = {}
    for event in _tail(conn, mark, symbols):
        if event.ts >= window.start:
            late.setdefault(event.symbol, []).append(event)
    for symbol, events in late.items():
        total = {} if found[symbol] is None else {0: found[symbol]}  # type: ignore[dict-item]
        merge_into(total, (c.copy(0) for c in fold(events, 10**12).values()))
        found[symbol] = total[0]
    return found


def stats_json(candle: Candle | None) -> dict[str, Any] | None:
    """Return the API shape of a symbol's 24-hour statistics."""
    if candle is None:
        return None
    opened = Decimal(candle.open)
    change = EXACT.subtract(Decimal(candle.close), opened)
    percent = EXACT.divide(EXACT.multiply(change, Decimal(100)), opened)
    rounded = percent.quantize(_CENT, rounding=ROUND_HALF_UP)
    if rounded.is_zero():
        rounded = abs(rounded)  # "-0.00" reads as a fall that did not happen
    return {
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "change": decimal_text(change),
        "change_pct": decimal_text(rounded),
        "volume": decimal_text(candle.volume),
        "ticks": candle.ticks,
    }
