"""The ``sim`` source: random walks with realistic prices, no network.

A geometric Brownian motion per symbol from plausible starting prices, with
per-symbol volatility and tick size, reproducible with ``TICKER_SEED``.  On a
takeover it continues each walk from the price the log last holds.  Each tick
also carries a trade size, drawn log-normally around the profile's typical
trade (a heavy right tail, as real trade sizes have) and written with the lot
size's decimals, from a random stream of its own so a seed's prices stay the
same with or without sizes.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from ticker.events import Event, Tick
from ticker.sources.base import Source

CRYPTO_YEAR = 365 * 24 * 3600  # crypto trades around the clock
EQUITY_YEAR = 252 * 6.5 * 3600  # stocks and FX are scaled to trading hours


@dataclass(frozen=True)
class Profile:
    """How a simulated symbol starts and moves."""

    start: float
    volatility: float  # annualised
    decimals: int
    year: float = EQUITY_YEAR
    size: float = 100.0  # the median trade, in units of the symbol
    size_decimals: int = 0  # the lot size: 0 for whole shares


PROFILES = {
    "BTC-USD": Profile(67000.0, 0.60, 2, CRYPTO_YEAR, 0.01, 8),
    "ETH-USD": Profile(3500.0, 0.75, 2, CRYPTO_YEAR, 0.2, 8),
    "SOL-USD": Profile(150.0, 0.90, 3, CRYPTO_YEAR, 5.0, 4),
    "DOGE-USD": Profile(0.16, 1.00, 6, CRYPTO_YEAR, 2000.0, 1),
    "PEPE-USD": Profile(0.00001234, 1.20, 10, CRYPTO_YEAR, 50_000_000.0, 0),
    "AAPL": Profile(230.0, 0.25, 2, size=100.0),
    "MSFT": Profile(420.0, 0.25, 2, size=60.0),
    "NVDA": Profile(140.0, 0.50, 2, size=200.0),
    "TSLA": Profile(250.0, 0.60, 2, size=100.0),
    "AMZN": Profile(190.0, 0.35, 2, size=100.0),
    "GOOGL": Profile(170.0, 0.30, 2, size=100.0),
    "EUR-USD": Profile(1.08, 0.08, 5, size=100_000.0),
    "GBP-USD": Profile(1.27, 0.09, 5, size=100_000.0),
    "USD-JPY": Profile(150.0, 0.10, 3, size=100_000.0),
}
SIZE_SIGMA = 1.0  # log-normal spread of trade sizes: the 90th percentile is about 3.6 x the median


def profile_for(symbol: str) -> Profile:
    """Return the profile of ``symbol``; unknown symbols get a stable made-up one."""
    known = PROFILES.get(symbol)
    if known is not None:
        return known
    digest = hashlib.sha256(symbol.encode()).digest()
    start = 10 + int.from_bytes(digest[:2], "big") % 490
    return Profile(float(start), 0.3 + digest[2] / 255 * 0.4, 2)


class SimSource(Source):
    """Random walks (geometric Brownian motion) for the tracked symbols."""

    def __init__(self, symbols: Sequence[str], interval: float, seed: int | None) -> None:
        self.symbols = list(symbols)
        self.interval = interval
        self.random = random.Random(seed)
        self.sizes = random.Random(None if seed is None else f"sizes:{seed}")
        self.profiles = {s: profile_for(s) for s in self.symbols}
        self.prices = {s: p.start for s, p in self.profiles.items()}

    def resume(self, latest: Sequence[Event]) -> None:
        """Continue each walk from the price the log last holds for it."""
        for event in latest:
            if event.symbol in self.prices:
                self.prices[event.symbol] = float(event.price)

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Advance every walk by one interval and return the new prices."""
        ticks = []
        for symbol in self.symbols:
            profile = self.profiles[symbol]
            dt = self.interval / profile.year
            sigma = profile.volatility
            shock = self.random.gauss(0.0, 1.0)
            step = math.exp(-0.5 * sigma * sigma * dt + sigma * math.sqrt(dt) * shock)
            smallest = 10.0**-profile.decimals
            price = max(self.prices[symbol] * step, smallest)
            self.prices[symbol] = price
            size = self.sizes.lognormvariate(math.log(profile.size), SIZE_SIGMA)
            lot = 10.0**-profile.size_decimals
            ticks.append(
                Tick(
                    symbol,
                    format_price(price, profile.decimals),
                    now_us,
                    format_price(max(size, lot), profile.size_decimals),
                )
            )
        return ticks


def format_price(price: float, decimals: int) -> str:
    """Round ``price`` to ``decimals`` places and return it as a plain decimal string."""
    quantum = Decimal(1).scaleb(-decimals)
    return format(Decimal(repr(price)).quantize(quantum, rounding=ROUND_HALF_EVEN), "f")
