"""A fake Binance or Coinbase REST API on 127.0.0.1: recorded payloads, scriptable failures.

``FakeVenue("binance")`` (or ``"coinbase"``) is a :class:`~tests.fakes.FakeExchange`
whose answers, past what a test scripts, come from ``tests/payloads/<venue>/``:
the documented JSON of the endpoints ccxt's ``load_markets``, ``fetch_tickers``,
``fetch_ticker`` and ``fetch_trades`` call (see ``tests/payloads/README.md``).
Point a source at ``venue.url`` with ``TICKER_SOURCE_URL``; ``make_exchange``
moves every host of the exchange there, keeping the paths, so one fake answers
for all of them.

Stable API (other branches build on it):

- ``venue.url``, ``venue.requests`` (path, query, status of each request),
  ``venue.count(path)``, ``venue.close()``;
- ``venue.payloads[name]``: the parsed payload files by name (``"ticker_24hr"``,
  ``"trades.BTCUSDT"``); change them to change what every later request gets;
- ``venue.script(path, *answers)``: the next requests to ``path`` get these
  answers first (``rate_limited``, ``server_error``, ``malformed``, ``HANG``,
  ``ok(payload)``);
- ``venue.always(path, answer)``: every request to ``path`` gets ``answer``
  until ``venue.heal(path)``;
- ``serving(name)``: a context manager that yields a venue and closes it.

Each venue answers the way the real one does where our code depends on it:
Binance refuses a request naming a symbol it does not list (``400``, code
``-1121``) and filters ``symbols=[...]``; Coinbase leaves unknown
``product_ids`` out of its answer and answers ``404`` for an unknown product.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fakes import HANG, Answer, FakeExchange, ok

__all__ = [
    "HANG",
    "PAYLOADS",
    "Answer",
    "FakeVenue",
    "malformed",
    "ok",
    "rate_limited",
    "server_error",
    "serving",
]

PAYLOADS = Path(__file__).parent / "payloads"

Query = dict[str, list[str]]

BINANCE_INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
BINANCE_TOO_MANY = {
    "code": -1003,
    "msg": "Too much request weight used; current limit is 6000 request weight per 1 MINUTE.",
}
BINANCE_BANNED = {"code": -1003, "msg": "Way too much request weight used; IP banned."}
COINBASE_NOT_FOUND = {"error": "NOT_FOUND", "error_details": "", "message": "product not found"}
COINBASE_TOO_MANY = {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]}


def rate_limited(venue: str, retry_after: str | None = "45", status: int = 429) -> Answer:
    """Answer as ``venue`` does when rate limited (``429``; Binance bans with ``418``)."""
    if venue == "binance":
        body = BINANCE_BANNED if status == 418 else BINANCE_TOO_MANY
    else:
        body = COINBASE_TOO_MANY
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return ok(body, status, **headers)


def server_error(status: int = 500, body: str = '{"message": "Internal server error"}') -> Answer:
    """Answer with a 5xx status and ``body`` as it is (an HTML page from a proxy, say)."""
    return Answer(status, body.encode(), {"Content-Type": "application/json"})


def malformed(body: str = '[{"symbol": "BTCUSDT", "lastPrice": "67000.0') -> Answer:
    """Answer 200 with a body that is not JSON (cut off mid-way)."""
    return ok(body)


class FakeVenue(FakeExchange):
    """A fake ``binance`` or ``coinbase`` serving its recorded payloads (see the module)."""

    def __init__(self, name: str) -> None:
        if name not in ROUTES:
            raise ValueError(f"no fake for {name!r}; there are {', '.join(ROUTES)}")
        super().__init__()
        self.name = name
        self.payloads: dict[str, Any] = {
            path.name.removesuffix(".json"): json.loads(path.read_text())
            for path in sorted((PAYLOADS / name).glob("*.json"))
        }
        self.broken: dict[str, Answer] = {}
        self.then = self.recorded

    def always(self, path: str, answer: Answer) -> None:
        """Answer every request to ``path`` with ``answer`` until :meth:`heal`."""
        with self.lock:
            self.broken[path] = answer

    def heal(self, path: str) -> None:
        """Serve ``path`` from the payloads again."""
        with self.lock:
            self.broken.pop(path, None)

    def recorded(self, path: str, query: Query) -> Answer:
        """Answer ``path`` from the payloads, as the real venue would."""
        with self.lock:
            broken = self.broken.get(path)
        if broken is not None:
            return broken
        return ROUTES[self.name](self, path, query)


@contextmanager
def serving(name: str) -> Iterator[FakeVenue]:
    """Run a :class:`FakeVenue` for ``name`` and close it afterwards."""
    venue = FakeVenue(name)
    try:
        yield venue
    finally:
        venue.close()


def _first(query: Query, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _limited(items: list[Any], query: Query) -> list[Any]:
    """Return the newest ``limit`` items (Binance: oldest first, so the tail)."""
    limit = _first(query, "limit")
    return items[-int(limit) :] if limit else items


def _binance(venue: FakeVenue, path: str, query: Query) -> Answer:
    listed = {m["symbol"] for m in venue.payloads["exchangeInfo"]["symbols"]}
    if path == "/api/v3/exchangeInfo":
        return ok(venue.payloads["exchangeInfo"])
    if path in ("/api/v3/ticker/24hr", "/api/v3/ticker/price"):
        rows = venue.payloads["ticker_24hr" if path.endswith("24hr") else "ticker_price"]
        return _binance_tickers(rows, listed, query)
    if path in ("/api/v3/trades", "/api/v3/aggTrades"):
        symbol = _first(query, "symbol") or ""
        if symbol not in listed:
            return ok(BINANCE_INVALID_SYMBOL, 400)
        kind = path.rsplit("/", 1)[1]
        trades = list(venue.payloads.get(f"{kind}.{symbol}", []))
        from_id = _first(query, "fromId")
        if from_id is not None:
            key = "a" if kind == "aggTrades" else "id"
            trades = [t for t in trades if t[key] >= int(from_id)]
            return ok(trades[: int(_first(query, "limit") or 500)])
        return ok(_limited(trades, query))
    return ok({"code": -1, "msg": f"the fake has no {path}"}, 404)


def _binance_tickers(rows: list[dict[str, Any]], listed: set[str], query: Query) -> Answer:
    """Answer ``symbols=[...]`` with a list, ``symbol=X`` with one row, neither with all rows."""
    by_symbol = {row["symbol"]: row for row in rows}
    one = _first(query, "symbol")
    if one is not None:
        return ok(by_symbol[one]) if one in by_symbol else ok(BINANCE_INVALID_SYMBOL, 400)
    many = _first(query, "symbols")
    if many is None:
        return ok(rows)
    try:
        names = json.loads(many)
    except ValueError:
        return ok({"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}, 400)
    if any(name not in listed for name in names):
        return ok(BINANCE_INVALID_SYMBOL, 400)
    return ok([by_symbol[name] for name in names if name in by_symbol])


_PRODUCT_RE = re.compile(r"^/api/v3/brokerage/market/products/([A-Za-z0-9-]+)(/ticker)?$")
_COINBASE_V2 = {
    "/v2/currencies": "currencies",
    "/v2/currencies/crypto": "currencies_crypto",
    "/v2/exchange-rates": "exchange_rates",
}


def _coinbase(venue: FakeVenue, path: str, query: Query) -> Answer:
    if path in _COINBASE_V2:
        return ok(venue.payloads[_COINBASE_V2[path]])
    products = venue.payloads["products"]
    if path == "/api/v3/brokerage/market/products":
        if _first(query, "product_type") == "FUTURE":
            return ok(venue.payloads["products.FUTURE"])
        wanted = query.get("product_ids")
        if not wanted:
            return ok(products)
        chosen = [p for p in products["products"] if p["product_id"] in wanted]
        return ok({"products": chosen, "num_products": len(chosen)})
    match = _PRODUCT_RE.match(path)
    if match is None:
        return ok({"error": "NOT_FOUND", "message": f"the fake has no {path}"}, 404)
    product_id, ticker = match.groups()
    product = next((p for p in products["products"] if p["product_id"] == product_id), None)
    if product is None:
        return ok(COINBASE_NOT_FOUND, 404)
    if not ticker:
        return ok(product)
    recorded = venue.payloads.get(f"ticker.{product_id}", {"trades": []})
    limit = _first(query, "limit")
    trades = recorded["trades"][: int(limit)] if limit else recorded["trades"]  # newest first
    return ok({**recorded, "trades": trades})


ROUTES: dict[str, Callable[[FakeVenue, str, Query], Answer]] = {
    "binance": _binance,
    "coinbase": _coinbase,
}
