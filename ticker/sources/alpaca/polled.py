"""The ``alpaca`` source: the latest trade of every tracked stock, polled on the IEX feed.

One request per interval asks for all symbols at once
(``GET /v2/stocks/trades/latest?symbols=AAPL,MSFT&feed=iex``), which keeps a
one-second interval far under the free plan's 200 requests a minute.  Trades,
not quotes: a trade is a price that was paid, with its size and its time,
exactly as Alpaca reports it; a quote is two prices (bid and ask) that a
ticker would have to average into a number nobody traded at, and IEX's quotes
on the free plan are often wide.

Each trade is appended once (``common.Seen``): a stock that did not trade
since the last poll gives no tick, and goes stale only if it stays quiet.
While the market is closed (Alpaca's clock, ``clock.MarketClock``) the data
API is not asked, and nothing counts as an error: only once per closed
spell, so that a server started on a weekend shows the closing prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alpaca.data.enums import DataFeed
from alpaca.data.requests import StockLatestTradeRequest

from ticker.config import Settings
from ticker.errors import SourceError
from ticker.events import Event, Tick
from ticker.sources.alpaca.client import DataClient
from ticker.sources.alpaca.common import Seen, Stocks, logger, trade_tick
from ticker.sources.base import Source

LATEST_TRADES = "/stocks/trades/latest"  # under the data API's /v2


class AlpacaPolledSource(Source):
    """Latest trades from Alpaca's market-data API, one request for all stocks per interval."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.stocks = stocks = Stocks(settings, environ)
        self.timeout = stocks.timeout
        self.data = DataClient(
            stocks.key, stocks.secret, url=settings.source_url, timeout=self.timeout
        )
        self.request = StockLatestTradeRequest(
            symbol_or_symbols=list(stocks.names.values()), feed=DataFeed.IEX
        )
        self.seen = Seen()
        self.missing: set[str] = set()
        self._closed_polled = False  # the closing prices were read in this closed spell

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Return a tick per stock that traded since the last poll; none while closed."""
        if not self.stocks.hours(self.health).is_open:
            if self._closed_polled:
                return []
            self._closed_polled = True
        else:
            self._closed_polled = False
        return self._fresh(self._latest())

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
        self.health.last_message_at = self.stocks.clock.monotonic()
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
        """Continue after the log's latest trades: none of them is appended again."""
        self.seen.start_from(latest)

    def closed_symbols(self) -> frozenset[str]:
        """Return the tracked stocks while the market is closed."""
        return self.stocks.closed(self.health)

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.data._session.close()
        self.stocks.close()
