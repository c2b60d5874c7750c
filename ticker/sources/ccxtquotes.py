"""Polled quotes through ccxt: ``ccxt:EXCHANGE``, and ``binance`` and ``coinbase`` by name.

Each interval asks the exchange for the last price of every tracked symbol: one
``fetch_tickers`` call for all of them where the exchange has it, otherwise
one ``fetch_ticker`` per symbol.  Each tick is stamped with the interval's
time and has no size (a quote is not a trade).

Invariants:

- No network before the first ``next_ticks``, which the producer runs outside
  any transaction: the markets load then, and our symbols are mapped onto
  them (:func:`~ticker.sources.exchange.map_symbols`).  A symbol the exchange
  does not list is warned about once and never asked for; when it lists none,
  every try fails with an error saying so, and the markets load again at the next.
- A price is the exchange's own text, never a float.  :data:`PRICE_FIELDS`
  says where a known exchange writes its last price in its raw answer
  (ccxt's ``ticker["info"]``).  For any other exchange, ccxt runs in its
  string mode (``exchange.number = str``), where the unified ``last`` is the
  string ccxt read from the answer.  Either way no float exists to round: the
  answers are parsed with ``parse_float=str``, so even a price the exchange
  sent as a JSON number (``0.00001234000``) arrives as its own digits.
- Every failure is a :class:`~ticker.errors.SourceError` naming the exchange,
  the request and the cause, with the ``Retry-After`` of a 429 or 418 attached
  (:mod:`ticker.sources.ccxtcalls`), so the producer logs it, counts it and
  backs off.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import ccxt

from ticker.errors import ConfigError, SourceError
from ticker.events import Tick, exact_price
from ticker.sources.base import Source
from ticker.sources.ccxtcalls import Calls
from ticker.sources.exchange import make_exchange, map_symbols

logger = logging.getLogger("ticker.sources")

#: Where each exchange writes the last traded price in the answer ccxt keeps in
#: ``ticker["info"]``: Binance's 24 h ticker ``lastPrice``, Coinbase Advanced
#: Trade's product ``price`` (its public trade's ``price`` for one symbol),
#: Kraken's ``c`` = [price, lot volume].
PRICE_FIELDS: Mapping[str, tuple[str | int, ...]] = {
    "binance": ("lastPrice",),
    "coinbase": ("price",),
    "kraken": ("c", 0),
}


class CCXTQuotes(Source):
    """The last price of each tracked symbol, polled from a ccxt exchange."""

    def __init__(
        self,
        exchange: str,
        symbols: Sequence[str],
        *,
        base_url: str | None = None,
        timeout: float = 2.0,
        symbol_map: Mapping[str, str] | None = None,
        quotes: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or f"ccxt:{exchange}"
        self.exchange = make_exchange(exchange, base_url=base_url, timeout=timeout)
        self.exchange.number = str  # ccxt's string mode: no unified field is a float
        self.exchange.on_json_response = partial(json.loads, parse_float=str)
        self.price_field = PRICE_FIELDS.get(exchange)
        self.symbols = tuple(symbols)
        self.explicit = dict(symbol_map or {})
        self.quotes = dict(quotes or {})
        _check_nameable(self.name, self.symbols, self.explicit)
        self.batched = bool(self.exchange.has.get("fetchTickers"))
        # One interval's requests, each waiting up to ccxt's rate limiter and the timeout.
        # The first fetch also loads the markets (a few requests more): if that outlasts
        # the lease, its ticks are dropped at the append, never written twice.
        requests = 1 if self.batched else len(self.symbols)
        self.timeout = requests * (timeout + self.exchange.rateLimit / 1000)
        #: our symbol -> the exchange's unified symbol; None until the markets load
        self.mapped: dict[str, str] | None = None
        self.dropped: set[str] = set()
        self.missing: set[str] = set()
        self.call = Calls(self.exchange, self.name)

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Return a tick per mapped symbol the exchange priced, at ``now_us``."""
        mapped = self._markets()
        if self.batched:
            try:
                tickers = self.call(self.exchange.fetch_tickers, sorted(set(mapped.values())))
            except SourceError as exc:
                if isinstance(exc.__cause__, ccxt.BadSymbol):
                    self.mapped = None  # a market went away since they loaded: map again
                raise
            return self._ticks(mapped, tickers, now_us)
        return self._one_by_one(mapped, now_us)

    def pause(self) -> None:
        """Close the idle connections to the exchange; the next fetch opens new ones."""
        self.exchange.close()

    def close(self) -> None:
        """Close the exchange's HTTP session."""
        self.exchange.close()

    def _markets(self) -> dict[str, str]:
        """Load the markets once and map our symbols onto them; raise when none maps."""
        if self.mapped is not None:
            return self.mapped
        self.call(self.exchange.load_markets, True)
        mapped, dropped = map_symbols(
            self.exchange.markets, self.symbols, self.explicit, self.quotes
        )
        if not mapped:
            raise SourceError(
                f"{self.name}: the exchange lists none of {', '.join(self.symbols)}; "
                "name its markets with TICKER_SOURCE_SYMBOLS or TICKER_SOURCE_QUOTES"
            )
        new = [s for s in dropped if s not in self.dropped]
        if new:
            logger.warning(
                "%s: the exchange does not list %s; not asking for %s (name its markets with "
                "TICKER_SOURCE_SYMBOLS or TICKER_SOURCE_QUOTES)",
                self.name,
                ", ".join(new),
                "it" if len(new) == 1 else "them",
            )
        self.dropped = set(dropped)
        logger.info(
            "%s: asking for %s",
            self.name,
            ", ".join(f"{ours} as {theirs}" for ours, theirs in mapped.items()),
        )
        self.mapped = mapped
        return mapped

    def _one_by_one(self, mapped: dict[str, str], now_us: int) -> list[Tick]:
        """Ask for each symbol in turn; drop one the exchange no longer knows, keep the rest."""
        tickers: dict[str, Any] = {}
        failures: list[SourceError] = []
        for theirs in sorted(set(mapped.values())):
            try:
                tickers[theirs] = self.call(self.exchange.fetch_ticker, theirs)
            except SourceError as exc:
                if not isinstance(exc.__cause__, ccxt.BadSymbol):
                    failures.append(exc)
                    continue
                logger.error("%s: no longer asking for %s: %s", self.name, theirs, exc)
                for ours in [o for o, t in mapped.items() if t == theirs]:
                    del mapped[ours]
        if not mapped:
            self.mapped = None  # every market went away: load them again next time
        if not failures:
            return self._ticks(mapped, tickers, now_us)
        got = self._priced(mapped, tickers, now_us)[0]
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise SourceError(
            f"{failures[0]}{more}", retry_after=max(waits) if waits else None, ticks=got
        )

    def _ticks(self, mapped: dict[str, str], tickers: Any, now_us: int) -> list[Tick]:
        """Turn the answer into ticks; log a symbol it leaves out once, and its return."""
        ticks, why = self._priced(mapped, tickers, now_us)
        if not ticks:
            causes = "; ".join(dict.fromkeys(why.values()))
            raise SourceError(f"{self.name}: no price for any of {', '.join(mapped)}: {causes}")
        missing = set(why)
        for symbol in sorted(missing - self.missing):
            logger.warning("%s: no price for %s; skipped: %s", self.name, symbol, why[symbol])
        if self.missing - missing:
            logger.info(
                "%s: prices again for %s", self.name, ", ".join(sorted(self.missing - missing))
            )
        self.missing = missing
        self.health.last_message_at = time.monotonic()
        self.health.trades += len(ticks)
        return ticks

    def _priced(
        self, mapped: Mapping[str, str], tickers: Any, now_us: int
    ) -> tuple[list[Tick], dict[str, str]]:
        """Return the ticks of the symbols ``tickers`` prices, and why each other is left out."""
        ticks: list[Tick] = []
        why: dict[str, str] = {}
        for ours, theirs in mapped.items():
            ticker = tickers.get(theirs) if isinstance(tickers, dict) else None
            if not isinstance(ticker, dict):
                why[ours] = f"{theirs} is not in the answer"
                continue
            try:
                ticks.append(Tick(ours, self._price(ticker), now_us))
            except ValueError as exc:
                why[ours] = f"{theirs}: {exc}"
        return ticks, why

    def _price(self, ticker: Mapping[str, Any]) -> str:
        """Return the exchange's own text of the last price; raise ``ValueError`` if none."""
        if self.price_field is None:
            value = ticker.get("last")
            where = "last"
        else:
            value = _dig(ticker.get("info"), self.price_field)
            where = ".".join(str(step) for step in self.price_field)
        if value is None:
            raise ValueError(f"no {where} in the answer")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a JSON integer: its digits are exact
        return exact_price(value)


def _check_nameable(name: str, symbols: Sequence[str], explicit: Mapping[str, str]) -> None:
    """Stop start-up when no tracked symbol can name a market (no BASE-QUOTE pair, none named)."""
    if not any(s in explicit or "-" in s for s in symbols):
        raise ConfigError(
            "TICKER_SYMBOLS",
            ",".join(symbols),
            f"{name} quotes none of these symbols; track pairs such as BTC-USD "
            "or name them with TICKER_SOURCE_SYMBOLS",
        )


def _dig(value: Any, path: Sequence[str | int]) -> Any:
    """Return ``value[path[0]][path[1]]...``, or None where a step is missing."""
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value
