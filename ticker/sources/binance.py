"""The ``binance`` source: Binance's public latest prices, one request for all symbols.

``GET {base}/api/v3/ticker/price?symbols=["BTCUSDT","ETHUSDT"]`` answers
``[{"symbol": "BTCUSDT", "price": "67012.35000000"}, ...]``.  Our ``BTC-USD``
is Binance's ``BTCUSDT`` (USD is read as USDT unless ``TICKER_SOURCE_QUOTES``
says otherwise).  Rate limits answer ``429`` and bans ``418``, both with a
``Retry-After`` the producer honours.  One unknown name fails the whole request
(``400``, code ``-1121``), so the names are then asked for one by one, and
those Binance does not know are dropped with an error in the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from ticker.errors import SourceError
from ticker.events import Tick, exact_price
from ticker.sources._http import HTTPSource, StatusError

logger = logging.getLogger("ticker.sources")

PATH = "/api/v3/ticker/price"
INVALID_SYMBOL = -1121


class BinanceSource(HTTPSource):
    """Latest prices from ``api.binance.com`` (or ``TICKER_SOURCE_URL``), one request."""

    name = "binance"
    default_url = "https://api.binance.com"
    default_quotes: ClassVar[Mapping[str, str]] = {"USD": "USDT"}
    join = ""

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Ask for all prices in one request and return a tick per symbol in the answer."""
        names = sorted(set(self.names.values()))
        try:
            answer = self.get_json(PATH, {"symbols": json.dumps(names, separators=(",", ":"))})
        except StatusError as exc:
            if _code(exc.code) == INVALID_SYMBOL and len(names) > 1:
                return self._one_by_one(names, now_us)
            raise
        if not isinstance(answer, list):
            raise SourceError(f"{self._where()}: expected a list of prices, got {answer!r:.120}")
        prices: dict[str, str] = {}
        why: dict[str, str] = {}
        for item in answer:
            name, price, problem = _item(item)
            if price is not None:
                prices[name] = price
            elif name:
                why[name] = problem
        return self.ticks_from(prices, now_us, why)

    def _one_by_one(self, names: list[str], now_us: int) -> list[Tick]:
        """Find the names Binance does not know, stop asking for them, and price the rest."""
        prices: dict[str, str] = {}
        unknown: dict[str, str] = {}
        for name in names:
            try:
                answer = self.get_json(PATH, {"symbol": name})
            except StatusError as exc:
                if _code(exc.code) != INVALID_SYMBOL:
                    raise
                unknown[name] = str(exc)
                continue
            got, price, problem = _item(answer)
            if got == name and price is not None:
                prices[name] = price
            else:
                raise SourceError(f"{self._where()}?symbol={name}: {problem or 'another symbol'}")
        if not prices:
            # Every name refused: more likely a wrong TICKER_SOURCE_URL than no pair at all.
            raise SourceError(f"{self.name}: Binance knows none of {', '.join(names)}")
        for symbol, name in list(self.names.items()):
            if name in unknown:
                logger.error(
                    "%s: Binance does not know %s (%s), no longer asking for it: %s",
                    self.name,
                    name,
                    symbol,
                    unknown[name],
                )
                del self.names[symbol]
        return self.ticks_from(prices, now_us)

    def _where(self) -> str:
        return f"{self.name}: GET {self.base_url}{PATH}"


def _item(item: Any) -> tuple[str, str | None, str]:
    """Return ``(name, exact price or None, why not)`` of one answer item."""
    if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
        return "", None, f"not a price: {item!r:.80}"
    name = item["symbol"]
    try:
        return name, exact_price(item.get("price")), ""
    except ValueError as exc:
        return name, None, f"price {exc}"


def _code(code: object) -> int | None:
    try:
        return int(str(code))
    except ValueError:
        return None
