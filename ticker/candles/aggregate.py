"""The candle arithmetic: fold ticks into buckets and merge buckets, exactly.

Pure: no Flask, no database.  One merge serves the rollup (stored rows plus
new ticks), the queries (stored rows plus the raw ticks not rolled up yet) and
the 24-hour statistics, so every path gives the same answer.  The merge is
associative and commutative, so the order in which parts are merged never
changes the result:

- ``open``/``close``: the price of the smallest/largest ``(ts, id)``;
- ``high``/``low``: compared as decimals, the string kept as given; between
  equal values written differently (``67012.35`` and ``67012.350``), the one of
  the smaller id;
- ``volume``: the exact decimal sum of the sizes (``0`` when none had one);
- ``ticks``, ``first_id``/``last_id``: count, smallest and largest id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Context, Decimal

from ticker.config.values import CANDLE_INTERVALS
from ticker.events import Event

# Name → width in seconds.  Buckets are aligned to the Unix epoch; 86400 s is
# the UTC day, since Unix time has no leap seconds.  Each width is a multiple
# of the one before, so each level is merged from the one below it.
INTERVALS = CANDLE_INTERVALS
WIDTHS = tuple(INTERVALS.values())
US = 1_000_000

# Sizes have at most 20 + 18 digits; a sum of a trillion of them fits in 52.
EXACT = Context(prec=80)
ZERO = Decimal(0)


def bucket(ts: int, width: int) -> int:
    """Return the start (microseconds) of the ``width``-second bucket holding ``ts``."""
    span = width * US
    return ts - ts % span  # floors for times before 1970 too


@dataclass(slots=True)
class Candle:
    """One bucket's aggregate, with the keys that make merging exact."""

    start: int  # microseconds since the epoch
    open: str
    high: str
    low: str
    close: str
    volume: Decimal
    ticks: int
    first_id: int
    last_id: int
    open_ts: int
    open_id: int
    close_ts: int
    close_id: int
    high_id: int
    low_id: int
    high_value: Decimal
    low_value: Decimal

    @classmethod
    def of(cls, start: int, event: Event, value: Decimal | None = None) -> Candle:
        """Return the candle of one event (``value``: its price as a decimal, if known)."""
        price, eid, ts = event.price, event.id, event.ts
        if value is None:
            value = Decimal(price)
        volume = ZERO if event.size is None else Decimal(event.size)
        return cls(
            start, price, price, price, price, volume, 1, eid, eid,
            ts, eid, ts, eid, eid, eid, value, value,
        )  # fmt: skip

    def add(self, event: Event, value: Decimal | None = None) -> None:
        """Fold one event into this candle (``value``: its price as a decimal, if known)."""
        eid, ts, price = event.id, event.ts, event.price
        if value is None:
            value = Decimal(price)
        if ts < self.open_ts or (ts == self.open_ts and eid < self.open_id):
            self.open, self.open_ts, self.open_id = price, ts, eid
        if ts > self.close_ts or (ts == self.close_ts and eid > self.close_id):
            self.close, self.close_ts, self.close_id = price, ts, eid
        if value > self.high_value or (value == self.high_value and eid < self.high_id):
            self.high, self.high_value, self.high_id = price, value, eid
        if value < self.low_value or (value == self.low_value and eid < self.low_id):
            self.low, self.low_value, self.low_id = price, value, eid
        if event.size is not None:
            self.volume = EXACT.add(self.volume, Decimal(event.size))
        self.ticks += 1
        if eid < self.first_id:
            self.first_id = eid
        elif eid > self.last_id:
            self.last_id = eid

    def merge(self, other: Candle) -> None:
        """Fold ``other`` (the same bucket, other ticks) into this candle."""
        if (other.open_ts, other.open_id) < (self.open_ts, self.open_id):
            self.open, self.open_ts, self.open_id = other.open, other.open_ts, other.open_id
        if (other.close_ts, other.close_id) > (self.close_ts, self.close_id):
            self.close, self.close_ts, self.close_id = other.close, other.close_ts, other.close_id
        high = other.high_value
        if high > self.high_value or (high == self.high_value and other.high_id < self.high_id):
            self.high, self.high_value, self.high_id = other.high, high, other.high_id
        low = other.low_value
        if low < self.low_value or (low == self.low_value and other.low_id < self.low_id):
            self.low, self.low_value, self.low_id = other.low, low, other.low_id
        self.volume = EXACT.add(self.volume, other.volume)
        self.ticks += other.ticks
        self.first_id = min(self.first_id, other.first_id)
        self.last_id = max(self.last_id, other.last_id)

    def copy(self, start: int | None = None) -> Candle:
        """Return an independent copy, moved to ``start`` if given."""
        return Candle(
            self.start if start is None else start, self.open, self.high, self.low, self.close,
            self.volume, self.ticks, self.first_id, self.last_id, self.open_ts, self.open_id,
            self.close_ts, self.close_id, self.high_id, self.low_id, self.high_value,
            self.low_value,
        )  # fmt: skip


def fold(events: Iterable[Event], width: int) -> dict[tuple[str, int], Candle]:
    """Return the candles of ``events`` by (symbol, bucket start)."""
    found: dict[tuple[str, int], Candle] = {}
    values: dict[str, Decimal] = {}  # prices repeat: parse each once
    span = width * US
    for event in events:
        start = event.ts - event.ts % span
        key = (event.symbol, start)
        value = values.get(event.price)
        if value is None:
            value = values[event.price] = Decimal(event.price)
        candle = found.get(key)
        if candle is None:
            found[key] = Candle.of(start, event, value)
        else:
            candle.add(event, value)
    return found


def coarsen(fine: dict[tuple[str, int], Candle], width: int) -> dict[tuple[str, int], Candle]:
    """Merge finer candles into ``width``-second buckets (``width`` a multiple of theirs)."""
    found: dict[tuple[str, int], Candle] = {}
    span = width * US
    for (symbol, start), candle in fine.items():
        key = (symbol, start - start % span)
        into = found.get(key)
        if into is None:
            found[key] = candle.copy(key[1])
        else:
            into.merge(candle)
    return found


def merge_into(into: dict[int, Candle], parts: Iterable[Candle]) -> None:
    """Merge ``parts`` into ``into`` (by bucket start), copying where a bucket is new."""
    for part in parts:
        have = into.get(part.start)
        if have is None:
            into[part.start] = part.copy()
        else:
            have.merge(part)


def decimal_text(value: Decimal) -> str:
    """Write an exact decimal in plain notation (``0.50100000``, never ``5.01E-1``)."""
    return format(value, "f")
