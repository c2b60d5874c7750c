"""Price sources: where ticks come from before they enter the log.

``TICKER_SOURCE`` picks one:

- ``sim``: random walks (:mod:`ticker.sources.sim`);
- ``ccxt:EXCHANGE``: any exchange ccxt knows, its last prices polled
  (:mod:`ticker.sources.ccxtquotes`); ``coinbase`` and ``binance`` are
  ``ccxt:coinbase`` and ``ccxt:binance`` by their old names;
- ``ccxt:EXCHANGE:trades``: an exchange's trades over WebSocket through ccxt.pro
  (:mod:`ticker.sources.ccxttrades`, on the machinery of :mod:`ticker.sources.feed`);
- ``alpaca``, ``alpaca:trades``: US stocks from Alpaca, latest trades polled or
  every trade streamed (:mod:`ticker.sources.alpaca`);
- ``csv:PATH``: a historical price file replayed (:mod:`ticker.sources.csvfile`);
- ``python:MODULE:NAME``: your own :class:`Source`, built as ``NAME(settings)``;
- ``none``: no source; ticks come only through ``POST /api/ticks``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ticker.config import Settings
from ticker.errors import ConfigError, SourceError
from ticker.events import Event, Tick, exact_price
from ticker.sources.base import Source
from ticker.sources.csvfile import CSVSource
from ticker.sources.sim import PROFILES, Profile, SimSource, format_price, profile_for

__all__ = [
    "PROFILES",
    "CSVSource",
    "Event",
    "Profile",
    "SimSource",
    "Source",
    "SourceError",
    "Tick",
    "exact_price",
    "format_price",
    "make_source",
    "profile_for",
]


def make_source(settings: Settings) -> Source | None:
    """Build the source named by ``TICKER_SOURCE`` (None for ``none``)."""
    kind, _, arg = settings.source.partition(":")
    if kind == "none":
        return None
    if kind == "sim":
        return SimSource(settings.symbols, settings.tick_interval, settings.seed)
    if kind in ("coinbase", "binance") or (kind == "ccxt" and ":" not in arg):
        from ticker.sources.ccxtquotes import CCXTQuotes  # ccxt loads only when it is used

        exchange = arg or kind
        return CCXTQuotes(exchange, settings.symbols, name=settings.source, **_exchange(settings))
    if kind == "ccxt" and arg.endswith(":trades"):
        from ticker.sources.ccxttrades import CCXTTradesSource

        return CCXTTradesSource(
            arg.partition(":")[0],
            settings.symbols,
            silence=settings.source_silence,
            backoff=settings.source_backoff,
            **_exchange(settings),
        )
    if kind == "alpaca":
        from ticker.sources import alpaca  # alpaca-py: imported only when asked for

        return alpaca.AlpacaTradesSource(settings) if arg else alpaca.AlpacaPolledSource(settings)
    if kind == "csv":
        return CSVSource(
            Path(arg),
            settings.symbols,
            symbol=settings.csv_symbol,
            speed=settings.csv_speed,
            loop=settings.csv_loop,
        )
    if kind == "python":
        return _load(arg, settings)
    raise ConfigError("TICKER_SOURCE", settings.source, "unknown source")


def _exchange(settings: Settings) -> dict[str, Any]:
    """Return what both ccxt sources take from the settings: URL, timeout, symbol names."""
    return {
        "base_url": settings.source_url,
        "timeout": settings.source_timeout,
        "symbol_map": dict(settings.source_symbols),
        "quotes": dict(settings.source_quotes or ()),
    }


def _load(target: str, settings: Settings) -> Source:
    """Import ``MODULE:NAME`` and call it with the settings to build a user's source."""
    module_name, _, attribute = target.partition(":")

    def refuse(reason: str) -> ConfigError:
        return ConfigError("TICKER_SOURCE", f"python:{target}", reason)

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise refuse(f"cannot import {module_name}: {exc}") from None
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise refuse(f"{module_name} has no {attribute}")
    if not callable(factory):
        raise refuse(f"{attribute} is not callable")
    try:
        source = factory(settings)
    except ConfigError:
        raise
    except Exception as exc:
        raise refuse(f"{attribute}(settings) failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(source, Source):
        raise refuse(f"{attribute}(settings) gave a {type(source).__name__}, not a Source")
    return source
