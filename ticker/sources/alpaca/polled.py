"""The ``alpaca`` source: the latest trade of every tracked stock, polled on the IEX feed.

One request per interval asks for all symbols at once
(``GET /v2/stocks/trades/latest?symbols=AAPL,MSFT&feed=iex``), which keeps a
one-second interval far under the free plan's 200 requests a minute.  Trades,
not quotes: a trade is a price that was paid, with its size and its time,
exactly as Alpaca reports it; a quote is two prices (bid and ask) that a
ticker would have to average into a number nobody traded at, and IEX's quotes
on the free plan are often wide.

Each trade is appended once (``Seen``: per symbol the newest trade taken, its
time and Alpaca's trade id ``i``; a trade not newer is dropped): a stock that
did not trade since the last poll gives no tick, and goes stale only if it
stays quiet.  On ``resume`` that starts over from the log's latest events, so
a new lease holder appends nothing the old one did, and nothing this process
fetched but never committed (the lease moved meanwhile) is skipped.
While the market is closed (Alpaca's clock, ``clock.MarketClock``) the data
API is not asked, and nothing counts as an error: only once per closed
spell, so that a server started on a weekend shows the closing prices.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from alpaca.data.enums import DataFeed
from alpaca.data.requests import StockLatestTradeRequest

from ticker.config import Settings
from ticker.errors import SourceError
from ticker.events import Event, Tick, exact_price, exact_size, parse_ts
from ticker.sources.alpaca.client import DataClient
from ticker.sources.alpaca.common import Stocks, logger
from ticker.sources.base import Source

LATEST_TRADES = "/stocks/trades/latest"  # under the data API's /v2
_FRACTION_RE = re.compile(r"\.(\d+)")


def trade_time(raw: object) -> int:
    """Return an RFC 3339 trade time (nanoseconds allowed) in microseconds, truncated."""
    if not isinstance(raw, str):
        raise ValueError(f"the trade time is a {type(raw).__name__}, not a string")
    return parse_ts(_FRACTION_RE.sub(lambda m: "." + m.group(1)[:6], raw, count=1))


def trade_tick(symbol: str, trade: Mapping[str, Any]) -> tuple[Tick, str | None]:
    """Return the tick of one Alpaca trade (``p``, ``s``, ``t``) and its trade id ``i``."""
    size = trade.get("s")
    tick = Tick(
        symbol,
        exact_price(trade["p"]),
        trade_time(trade["t"]),
        None if size is None else exact_size(size),
    )
    trade_id = trade.get("i")
    return tick, None if trade_id is None else str(trade_id)


class Seen:
    """The newest trade appended per symbol: its time and id, to drop what is not newer."""

    def __init__(self) -> None:
        self.newest: dict[str, tuple[int, str | None]] = {}

    def fresh(self, tick: Tick, trade_id: str | None) -> bool:
        """Tell whether the trade is new, and if so remember it as the symbol's newest."""
        last = self.newest.get(tick.symbol)
        if last is not None and (
            tick.ts < last[0] or (tick.ts == last[0] and _same(trade_id, last[1]))
        ):
            return False
        self.newest[tick.symbol] = (tick.ts, trade_id)
        return True

    def start_from(self, latest: Sequence[Event]) -> None:
        """Forget what was seen and take the log's latest events as the newest trades.

        What this process fetched but did not commit (the lease moved) is then
        taken again if the venue still reports it.
        """
        self.newest = {event.symbol: (event.ts, None) for event in latest}


def _same(trade_id: str | None, last_id: str | None) -> bool:
    """Two trades of one time are the same unless both ids are known and differ."""
    return trade_id is None or last_id is None or trade_id == last_id


class AlpacaPolledSource(Source):
    """Latest trades from Alpaca's market-data API, one request for all stocks per interval."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.stocks = stocks = Stocks(settings, environ)
        self.timeout = 2 * stocks.timeout  # an interval may ask the clock, then the data API
        self.data = DataClient(
            stocks.key, stocks.secret, url=settings.source_url, timeout=stocks.timeout
        )
        self.request = StockLatestTradeRequest(
            symbol_or_symbols=list(stocks.names.values()), feed=DataFeed.IEX
        )
        self.seen = Seen()
        self.missing: set[str] = set()
        self._closed_polled = False  # the closing prices were read in this closed spell

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Return a tick per stock that traded since the last poll; none while closed."""
        is_open = self.stocks.hours(self.health).is_open
        if not is_open and self._closed_polled:
            return []
        ticks = self._fresh(self._latest())  # a failure is tried again at the next interval
        self._closed_polled = not is_open
        return ticks

    def _latest(self) -> dict[str, Any]:
        """Ask for every stock's latest trade; return Alpaca's trades by its names."""
        # RESTClient.get rather than get_stock_latest_trade: that one takes any known
        # key of a market-data answer (bars, quotes) as if it were the trades.
        answer = self.data.get(LATEST_TRADES, self.request.to_request_fields())
        trades = answer.get("trades") if isinstance(answer, dict) else None
        if not isinstance(trades, dict):
            raise SourceError(
                f'alpaca: GET {LATEST_TRADES}: expected {{"trades": {{...}}}}, got {answer!r:.120}'
            )
        self.health.last_message_at = time.monotonic()
        return trades

    def _fresh(self, trades: dict[str, Any]) -> list[Tick]:
        """Turn the trades into ticks, leaving out those already appended and those malformed."""
        ticks: list[Tick] = []
        bad: list[str] = []
        for name, symbol in self.stocks.symbols.items():
            trade = trades.get(name)
            if trade is None:
                continue
            try:
                tick, trade_id = trade_tick(symbol, trade)
            except (KeyError, TypeError, ValueError) as exc:
                bad.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if self.seen.fresh(tick, trade_id):
                self.health.trades += 1
                ticks.append(tick)
        self._note_missing({s for n, s in self.stocks.symbols.items() if n not in trades})
        if bad:
            raise SourceError(f"alpaca: malformed trades: {'; '.join(bad)}"[:400], ticks=ticks)
        return ticks

    def _note_missing(self, missing: set[str]) -> None:
        for symbol in sorted(missing - self.missing):
            logger.warning("alpaca: no trade of %s on the IEX feed; skipped", symbol)
        if self.missing - missing:
            logger.info("alpaca: trades again for %s", ", ".join(sorted(self.missing - missing)))
        self.missing = missing

    def resume(self, latest: Sequence[Event]) -> None:
        """Continue after the log's latest trades, the truth at a take-over."""
        self.seen.start_from(latest)

    def closed_symbols(self) -> frozenset[str]:
        """Return the tracked stocks while the market is closed."""
        return self.stocks.closed(self.health)

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.data._session.close()
        self.stocks.close()
