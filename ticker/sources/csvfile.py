"""The ``csv:PATH`` source: replay a historical price file.

Two layouts are read, told apart by the header (case and spaces ignored):

- a daily export, ``Date,Open,High,Low,Close,Adj Close,Volume``: one tick per
  row with the ``Close`` price and the ``Volume`` as its size (where the file
  has that column), for the symbol of a ``Symbol`` column if there is one,
  else ``TICKER_CSV_SYMBOL`` (default: the first tracked symbol);
- a tick file, ``ts,symbol,price`` and optionally ``size``: one tick per row.

Rows are replayed in time order (file order among equal times).  Rows that
share a time form one *step*.  ``speed=None`` replays one step per tick
interval; a number replays that many times faster than the file's clock
(``86400``: a day of the file per second).  At the end the replay starts over
(``loop``) or stops.  Prices and sizes are the file's exact strings; an empty size cell gives a
tick without a size.  Each tick is
stamped with the time it is replayed, not the row's date, so that retention,
the newest tick's age and the page's clock keep meaning now.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ticker.config import normalise_symbol
from ticker.errors import ConfigError
from ticker.events import Event, Tick, check_price, check_size, parse_ts
from ticker.sources.base import Source

logger = logging.getLogger("ticker.sources")

DAILY = ("date", "close")
TICKS = ("ts", "symbol", "price")


@dataclass(frozen=True)
class Row:
    """One replayable row: when it happened in the file, what, at which price."""

    line: int
    time_us: int
    symbol: str
    price: str
    size: str | None = None


class CSVSource(Source):
    """Replay a CSV price file, one step per interval or scaled in time."""

    def __init__(
        self,
        path: Path,
        symbols: Sequence[str],
        *,
        symbol: str | None = None,
        speed: float | None = None,
        loop: bool = True,
    ) -> None:
        self.path = path
        self.speed = speed
        self.loop = loop
        rows = read_rows(path, symbols, symbol or symbols[0])
        rows.sort(key=lambda r: r.time_us)  # stable: file order among equal times
        self.steps: list[list[Row]] = []
        for row in rows:
            if self.steps and self.steps[-1][0].time_us == row.time_us:
                self.steps[-1].append(row)
            else:
                self.steps.append([row])
        self.index = 0  # the next step to replay
        self.anchor: tuple[int, int] | None = None  # (wall time, file time) of a scaled replay
        self.finished = False

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Return the next step (or, scaled, every step now due), stamped ``now_us``."""
        if self.index >= len(self.steps):
            if not self.loop:
                if not self.finished:
                    logger.info("csv: %s replayed to its end; no more ticks", self.path)
                    self.finished = True
                return []
            logger.info("csv: %s replayed to its end; starting over", self.path)
            self.index, self.anchor = 0, None
        if self.speed is None:
            step = self.steps[self.index]
            self.index += 1
            return [Tick(r.symbol, r.price, now_us, r.size) for r in step]
        if self.anchor is None:
            self.anchor = (now_us, self.steps[self.index][0].time_us)
        due = self.anchor[1] + (now_us - self.anchor[0]) * self.speed
        ticks: list[Tick] = []
        while self.index < len(self.steps) and self.steps[self.index][0].time_us <= due:
            ticks.extend(Tick(r.symbol, r.price, now_us, r.size) for r in self.steps[self.index])
            self.index += 1
        return ticks

    def resume(self, latest: Sequence[Event]) -> None:
        """Continue after the first row that matches the log's newest replayed tick."""
        replayed = {r.symbol for step in self.steps for r in step}
        newest = max((e for e in latest if e.symbol in replayed), key=lambda e: e.id, default=None)
        if newest is None:
            return
        for index, step in enumerate(self.steps):
            if any(r.symbol == newest.symbol and r.price == newest.price for r in step):
                self.index, self.anchor, self.finished = index + 1, None, False
                logger.info("csv: resuming %s after line %d", self.path, step[0].line)
                return


def read_rows(path: Path, symbols: Sequence[str], default_symbol: str) -> list[Row]:
    """Read the replayable rows of ``path``; raise ``ConfigError`` if it has none."""

    def refuse(reason: str) -> ConfigError:
        return ConfigError("TICKER_SOURCE", f"csv:{path}", reason)

    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = [h.strip().lower() for h in next(reader, [])]
            lines = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise refuse(f"cannot read the file: {exc}") from None
    column = {name: i for i, name in reversed(list(enumerate(header)))}
    if all(c in column for c in TICKS):
        time_col, symbol_col, price_col = column["ts"], column["symbol"], column["price"]
        size_col = column.get("size", -1)
    elif all(c in column for c in DAILY):
        time_col, price_col = column["date"], column["close"]
        symbol_col = column.get("symbol", column.get("ticker", -1))
        size_col = column.get("volume", -1)
    else:
        raise refuse(
            "expected a header Date,Open,High,Low,Close,Adj Close,Volume or ts,symbol,price; "
            f"found {','.join(header)[:200]!r}"
        )
    rows: list[Row] = []
    skipped: Counter[str] = Counter()
    unsized = 0
    for number, cells in enumerate(lines, start=2):
        if not any(c.strip() for c in cells):
            continue
        try:
            raw_symbol = cells[symbol_col] if symbol_col >= 0 else default_symbol
            symbol = normalise_symbol(raw_symbol)
            price = check_price(cells[price_col].strip())
            time_us = parse_time(cells[time_col].strip())
        except (IndexError, ValueError):
            skipped["malformed (bad or missing time, symbol or price)"] += 1
            continue
        raw_size = cells[size_col].strip() if 0 <= size_col < len(cells) else ""
        try:
            size = check_size(raw_size) if raw_size else None
        except ValueError:  # "null" in an export: the price is still good
            size = None
            unsized += 1
        if symbol not in symbols:
            skipped[f"of {symbol}, which is not tracked"] += 1
            continue
        rows.append(Row(number, time_us, symbol, price, size))
    for why, count in skipped.items():
        logger.warning("csv: %s: skipped %d rows %s", path, count, why)
    if unsized:
        logger.warning(
            "csv: %s: %d rows have a size or volume that is not a non-negative decimal;"
            " replayed without a size",
            path,
            unsized,
        )
    if not rows:
        raise refuse("no row to replay (every row is malformed or of an untracked symbol)")
    return rows


def parse_time(raw: str) -> int:
    """Parse a row's date or ISO 8601 time (UTC when it has no zone) into microseconds."""
    parsed = datetime.fromisoformat(raw.replace("z", "Z"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parse_ts(parsed.isoformat())
