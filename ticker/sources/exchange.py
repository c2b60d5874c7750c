"""What the ccxt sources share: building an exchange, pointing it elsewhere, naming symbols.

``make_exchange`` builds ccxt's class for a name (``ccxt.pro`` for the
WebSocket sources), with every REST and WebSocket URL moved onto
``TICKER_SOURCE_URL`` when it is set: ``https://api.binance.com/api/v3``
becomes ``http://127.0.0.1:8001/api/v3`` and ``wss://stream.binance.com:9443/ws``
becomes ``ws://127.0.0.1:8001/ws`` (the path kept, so one fake server or proxy
can answer for every host of an exchange).  ``map_symbols`` turns our
``BASE-QUOTE`` names into the exchange's markets once they are loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ticker.errors import ConfigError

logger = logging.getLogger("ticker.sources")

#: Quote currencies tried, in order, when a symbol's own quote is not listed
#: and TICKER_SOURCE_QUOTES does not rename it: a dollar pair is usually
#: quoted in a dollar stablecoin on exchanges that have no fiat pairs.
FALLBACK_QUOTES: Mapping[str, tuple[str, ...]] = {"USD": ("USDT", "USDC")}


#: ccxt options each exchange gets by default.  Binance: load the spot markets
#: only (exchangeInfo), not the futures hosts, which no source here needs.
DEFAULT_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "binance": {"fetchMarkets": {"types": ["spot"]}},
}


def make_exchange(
    name: str,
    *,
    base_url: str | None = None,
    timeout: float = 2.0,
    pro: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """Build ccxt's exchange ``name`` (its async ``ccxt.pro`` class when ``pro``).

    An exchange ccxt does not know raises :class:`ConfigError` naming
    ``TICKER_SOURCE``.  ccxt's own rate limiter stays on.  ``options`` go over
    the exchange's :data:`DEFAULT_OPTIONS`.
    """
    if pro:
        import ccxt.pro as family
    else:
        import ccxt as family
    if name not in family.exchanges:
        kind = "ccxt:" + name + (":trades" if pro else "")
        raise ConfigError(
            "TICKER_SOURCE", kind, f"{name!r} is not an exchange of ccxt{' pro' if pro else ''}"
        )
    exchange = getattr(family, name)(
        {
            "timeout": int(timeout * 1000),
            "enableRateLimit": True,
            "options": {**DEFAULT_OPTIONS.get(name, {}), **(options or {})},
        }
    )
    if base_url:
        exchange.urls["api"] = point_at(exchange.urls["api"], base_url)
    return exchange


def point_at(urls: Any, base_url: str) -> Any:
    """Return ``urls`` (a URL, or ccxt's nested dicts of them) moved onto ``base_url``'s host.

    The path stays; ``https`` becomes the base URL's scheme and ``wss`` its
    WebSocket twin (``http`` gives ``ws``).
    """
    if isinstance(urls, dict):
        return {key: point_at(value, base_url) for key, value in urls.items()}
    if isinstance(urls, list):
        return [point_at(value, base_url) for value in urls]
    if not isinstance(urls, str) or "://" not in urls:
        return urls
    base = urlsplit(base_url)
    url = urlsplit(urls)
    if url.scheme in ("ws", "wss"):
        scheme = "ws" if base.scheme == "http" else "wss"
    else:
        scheme = base.scheme
    path = base.path.rstrip("/") + url.path
    return urlunsplit((scheme, base.netloc, path, url.query, url.fragment))


def map_symbols(
    markets: Mapping[str, Mapping[str, Any]],
    symbols: Sequence[str],
    explicit: Mapping[str, str],
    quotes: Mapping[str, str],
) -> tuple[dict[str, str], list[str]]:
    """Map our symbols to the exchange's unified symbols; return the map and those left out.

    ``markets`` is ccxt's ``exchange.markets`` (unified symbol -> market).
    ``explicit`` (TICKER_SOURCE_SYMBOLS) names a market by its unified symbol
    (``BTC/USDT``) or by the exchange's own id (``BTCUSDT``).  Otherwise
    ``BTC-USD`` becomes ``BTC/`` + the quote renamed by ``quotes``
    (TICKER_SOURCE_QUOTES) or, without a rename, ``BTC/USD`` and then the
    :data:`FALLBACK_QUOTES`.  Only spot markets that are not marked inactive count.
    """
    listed = {
        s: m for s, m in markets.items() if m.get("spot", True) and m.get("active") is not False
    }
    by_id = {str(m.get("id")).upper(): s for s, m in listed.items()}
    mapped: dict[str, str] = {}
    dropped: list[str] = []
    for symbol in symbols:
        if symbol in explicit:
            name = explicit[symbol]
            candidates = [name, by_id.get(name.upper(), "")]
        else:
            base, dash, quote = symbol.partition("-")
            if not dash:
                dropped.append(symbol)
                continue
            tried = (
                (quotes[quote],) if quote in quotes else (quote, *FALLBACK_QUOTES.get(quote, ()))
            )
            candidates = [f"{base}/{q}" for q in tried]
        found = next((c for c in candidates if c in listed), None)
        if found is None:
            dropped.append(symbol)
        else:
            mapped[symbol] = found
    return mapped, dropped
