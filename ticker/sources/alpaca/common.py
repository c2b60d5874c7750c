"""What both alpaca sources share: the keys, Alpaca's names for the stocks, the market clock.

``Stocks`` holds what does not depend on how trades arrive; one per source,
so the producer and the web side of a process share one clock.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence

from ticker.config import Settings
from ticker.errors import ConfigError
from ticker.sources.alpaca.client import ClockClient, credentials, trading_url
from ticker.sources.alpaca.clock import Hours, MarketClock
from ticker.sources.base import SourceHealth

logger = logging.getLogger("ticker.sources")

# Alpaca's US stock symbols: letters, digits and a class after a dot (BRK.B).
_STOCK_RE = re.compile(r"^[A-Z][A-Z0-9]{0,9}(\.[A-Z0-9]{1,4})?$")


def stock_names(symbols: Sequence[str], explicit: Mapping[str, str]) -> dict[str, str]:
    """Map each tracked symbol Alpaca can name to its name; warn of the rest; stop if none."""
    names = {s: explicit.get(s, s) for s in symbols if s in explicit or _STOCK_RE.match(s)}
    unnamed = [s for s in symbols if s not in names]
    if not names:
        raise ConfigError(
            "TICKER_SYMBOLS",
            ",".join(symbols),
            "alpaca trades US stocks and none of these is one; track symbols such as AAPL,MSFT "
            "or name them with TICKER_SOURCE_SYMBOLS",
        )
    if unnamed:
        logger.warning(
            "alpaca: not asking for %s (not US stock symbols; map them with TICKER_SOURCE_SYMBOLS)",
            ", ".join(unnamed),
        )
    return names


class Stocks:
    """The stocks of one alpaca source: Alpaca's names for them, the keys, the market clock."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.key, self.secret = credentials(environ)
        self.names = stock_names(settings.symbols, dict(settings.source_symbols))
        self.symbols = {name: symbol for symbol, name in self.names.items()}
        self.timeout = settings.source_timeout
        self.clock = MarketClock(
            ClockClient(self.key, self.secret, url=trading_url(environ), timeout=self.timeout)
        )

    def hours(self, health: SourceHealth) -> Hours:
        """Return the market hours (asking the clock when due) and show them in ``health``."""
        hours = self.clock.current()
        _show(health, hours)
        return hours

    def closed(self, health: SourceHealth) -> frozenset[str]:
        """Return the tracked stocks while the market is closed (none while open or unknown)."""
        hours = self.clock.known()
        _show(health, hours)
        return frozenset(self.names) if hours is not None and not hours.is_open else frozenset()

    def close(self) -> None:
        """Close the clock's HTTP session."""
        self.clock.client._session.close()


def _show(health: SourceHealth, hours: Hours | None) -> None:
    if hours is None:
        health.market = health.next_open = health.next_close = None
        return
    shown = hours.report()
    health.market, health.next_open, health.next_close = (
        shown["market"],
        shown["next_open"],
        shown["next_close"],
    )
