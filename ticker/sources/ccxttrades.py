"""``TICKER_SOURCE=ccxt:EXCHANGE:trades``: an exchange's trades over WebSocket, via ccxt.pro.

Each connection is a fresh ccxt.pro exchange (``make_exchange(pro=True)``),
built in the feed thread so that its aiohttp session lives on that thread's
loop; the markets are loaded over REST once and kept across reconnects.  One
``watch_trades_for_symbols`` call covers every symbol where ``exchange.has``
says so, else one ``watch_trades`` per symbol runs side by side.  A watch
call resolving only says that trades arrived: they are read from ccxt's
trade caches (``_unread``), since a call returns just one symbol's.

Exact prices.  ccxt's unified ``price`` and ``amount`` are floats; each tick
takes the exchange's own strings from the trade's ``info`` instead (Binance's
trade stream ``p``, ``q``, time ``T``, id ``t``; Coinbase Advanced Trade's
``market_trades`` ``price``, ``size``, ``time``, ``trade_id``; for other
exchanges the usual key names, and a trade without price and size strings is
malformed).  A trade's time is the exchange's.

Two things ccxt 4.5.90 does that this module works around: a frame that is
not valid JSON raises inside ccxt's receive callback, which then stops reading
that connection without failing any watcher (``_guard`` skips and counts such
frames instead); and Binance's ``historicalTrades`` (trades from an id) needs
an API key in ccxt, so a gap is filled from the public recent trades
(``/api/v3/trades``, the last 1,000): a longer outage loses the older part,
logged as such.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ticker.errors import SourceError
from ticker.events import exact_price, exact_size, parse_ts
from ticker.sources._http import parse_retry_after
from ticker.sources.exchange import make_exchange, map_symbols
from ticker.sources.feed import FeedSource
from ticker.sources.upstream import Trade, Upstream

logger = logging.getLogger("ticker.sources.ccxttrades")

RECENT_TRADES = 1000  # Binance's /api/v3/trades answers at most this many
_PRICE_KEYS = ("price", "p", "px")
_SIZE_KEYS = ("size", "qty", "q", "amount", "quantity", "sz", "volume", "v")


@dataclass(frozen=True)
class Dialect:
    """How one exchange's trades read: price, size, time and id from ``info``."""

    fields: Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[object, object, int, str]]
    ordered: bool = False  # ids rise per symbol
    sequential: bool = False  # ids rise by one per symbol: gaps are seen and filled


def _binance(trade: Mapping[str, Any], info: Mapping[str, Any]) -> tuple[object, object, int, str]:
    if "p" in info:  # the trade stream
        return info["p"], info["q"], int(info["T"]) * 1000, str(int(info["t"]))
    return info["price"], info["qty"], int(info["time"]) * 1000, str(int(info["id"]))  # REST


def _coinbase(trade: Mapping[str, Any], info: Mapping[str, Any]) -> tuple[object, object, int, str]:
    return info["price"], info["size"], _iso_us(str(info["time"])), str(info["trade_id"])


def _generic(trade: Mapping[str, Any], info: Mapping[str, Any]) -> tuple[object, object, int, str]:
    price = next(info[k] for k in _PRICE_KEYS if k in info)
    size = next(info[k] for k in _SIZE_KEYS if k in info)
    return price, size, int(trade["timestamp"]) * 1000, str(trade["id"])


DIALECTS = {
    "binance": Dialect(_binance, ordered=True, sequential=True),
    "coinbase": Dialect(_coinbase, ordered=True),
}
GENERIC = Dialect(_generic)


def _iso_us(text: str) -> int:
    """Parse an ISO time whose fraction may have nine digits (Coinbase's) to microseconds."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = rest.rstrip("Zz")
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return parse_ts(text)


class CCXTTradesSource(FeedSource):
    """Trades of ``TICKER_SYMBOLS`` from one exchange's WebSocket."""

    def __init__(
        self,
        exchange: str,
        symbols: Sequence[str],
        *,
        base_url: str | None = None,
        timeout: float = 2.0,
        symbol_map: Mapping[str, str] | None = None,
        quotes: Mapping[str, str] | None = None,
        silence: float = 30.0,
        backoff: float = 30.0,
    ) -> None:
        super().__init__(f"ccxt:{exchange}:trades", silence=silence, backoff=backoff)
        make_exchange(exchange, pro=True)  # an exchange ccxt.pro lacks stops start-up here
        self.exchange = exchange
        self.symbols = tuple(symbols)
        self.base_url = base_url
        self.request_timeout = timeout
        self.symbol_map = dict(symbol_map or {})
        self.quotes = dict(quotes or {})
        self.dialect = DIALECTS.get(exchange, GENERIC)
        self.markets: dict[str, Any] | None = None  # loaded once, kept across reconnects
        self.ours: dict[str, str] = {}  # the exchange's unified symbol -> ours

    def upstream(self) -> Upstream:
        """Build the connection of one session."""
        return CCXTUpstream(self)

    def map(self, markets: Mapping[str, Any]) -> None:
        """Map our symbols onto the loaded markets, once; warn about those not listed."""
        mapped, dropped = map_symbols(markets, self.symbols, self.symbol_map, self.quotes)
        if dropped:
            logger.warning(
                "%s: not listed, dropped: %s", self.name, ", ".join(dropped)
            )  # fmt: skip
        if not mapped:
            raise SourceError(f"{self.name}: none of {', '.join(self.symbols)} is listed")
        self.ours = {unified: ours for ours, unified in mapped.items()}


class CCXTUpstream(Upstream):
    """One ccxt.pro exchange object: one WebSocket session."""

    def __init__(self, source: CCXTTradesSource) -> None:
        self.source = source
        self.ordered = source.dialect.ordered
        self.sequential = source.dialect.sequential
        self.exchange: Any = None
        self.watching: dict[str, asyncio.Future[Any]] = {}
        self.read_upto: dict[str, Any] = {}  # per trade cache: the newest trade returned
        self.wait: float | None = None  # the last REST refusal's Retry-After

    async def connect(self) -> None:
        """Build the exchange, load or reuse its markets, subscribe, wait for the socket."""
        source = self.source
        self.exchange = make_exchange(
            source.exchange,
            base_url=source.base_url,
            timeout=source.request_timeout,
            pro=True,
        )
        _guard(self.exchange, self.source.skip_malformed)
        self._note_retry_after()
        if source.markets is None:
            await self.exchange.load_markets()
            source.map(self.exchange.markets)
            source.markets = self.exchange.markets
        else:
            self.exchange.set_markets(source.markets)
        self._watch()
        await self._opened()

    def _watch(self) -> None:
        """Start the watch calls that are not running: one for all symbols, or one each."""
        exchange, unified = self.exchange, list(self.source.ours)
        if exchange.has.get("watchTradesForSymbols"):
            if "*" not in self.watching:
                self.watching["*"] = asyncio.ensure_future(
                    exchange.watch_trades_for_symbols(unified)
                )
            return
        for symbol in unified:
            if symbol not in self.watching:
                self.watching[symbol] = asyncio.ensure_future(exchange.watch_trades(symbol))

    async def _opened(self) -> None:
        """Return once every WebSocket of the exchange is open; raise if a watch failed."""
        while True:
            for future in self.watching.values():
                if future.done() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            clients = list((self.exchange.clients or {}).values())
            if clients and all(c.connected.done() for c in clients):
                return
            await asyncio.sleep(0.01)

    async def receive(self) -> Sequence[Any]:
        """Return the trades not returned yet, waiting for a watch call to resolve if none."""
        while True:
            unread = self._unread()
            if unread:
                return unread
            self._watch()
            done, _ = await asyncio.wait(
                self.watching.values(), return_when=asyncio.FIRST_COMPLETED
            )
            for key, future in list(self.watching.items()):
                if future in done:
                    del self.watching[key]
                    future.result()  # raises when the connection broke

    def _unread(self) -> list[Any]:
        """Take the trades ccxt cached since the last look, per cache, oldest first.

        A watch call returns only the trades of the symbol that resolved it,
        and trades that arrive while no call waits are only cached; so the
        caches are read instead, up to the last trade (by identity) read before.
        """
        found: list[Any] = []
        for key, cache in list((self.exchange.trades or {}).items()):
            last = self.read_upto.get(key)
            new = []
            for item in reversed(cache):
                if item is last:
                    break
                new.append(item)
            if new:
                self.read_upto[key] = new[0]
                found.extend(reversed(new))
        return found

    def parse(self, raw: Any) -> Trade:
        """Read an exchange's trade (ccxt's dict, ``info`` as the exchange sent it)."""
        price, size, ts, trade_id = self.source.dialect.fields(raw, raw["info"])
        return Trade(
            self.source.ours[raw["symbol"]], exact_price(price), exact_size(size), ts, trade_id
        )

    async def fill(self, symbol: str, after_id: int, limit: int) -> Sequence[Any]:
        """Return the recent trades (Binance's public ``/api/v3/trades``) after ``after_id``."""
        unified = next(u for u, ours in self.source.ours.items() if ours == symbol)
        trades = await self.exchange.fetch_trades(
            unified, limit=RECENT_TRADES, params={"fetchTradesMethod": "publicGetTrades"}
        )
        return [t for t in trades if int(t["id"]) > after_id][:limit]

    def _note_retry_after(self) -> None:
        """Keep the ``Retry-After`` of a refusal (429, Binance's 418) of each REST answer."""
        answered = self.exchange.on_rest_response

        def noted(code: int, reason: str, url: str, method: str, headers: Any, *rest: Any) -> Any:
            refused = code in (418, 429)
            self.wait = parse_retry_after(headers.get("Retry-After")) if refused else None
            return answered(code, reason, url, method, headers, *rest)

        self.exchange.on_rest_response = noted

    def retry_after(self) -> float | None:
        """Return the ``Retry-After`` of the last REST answer, if it refused us."""
        return self.wait

    async def close(self) -> None:
        """Cancel the watch calls and close the exchange's sockets and session."""
        for future in self.watching.values():
            future.cancel()
        self.watching = {}
        if self.exchange is not None:
            try:
                await self.exchange.close()
            except Exception as exc:
                logger.debug("%s: close: %s", self.source.name, exc)


def _guard(exchange: Any, on_malformed: Callable[[Any, Exception], None]) -> None:
    """Make every WebSocket client of ``exchange`` skip a frame it cannot read, not stop reading."""
    make_client = exchange.client

    def client(url: str) -> Any:
        made = make_client(url)
        if not getattr(made, "ticker_guarded", False):
            read = made.handle_text_or_binary_message

            def guarded(data: Any) -> None:
                try:
                    read(data)
                except Exception as exc:
                    on_malformed(data, exc)

            made.handle_text_or_binary_message = guarded
            made.ticker_guarded = True
        return made

    exchange.client = client
