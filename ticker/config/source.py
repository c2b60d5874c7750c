"""The source settings: ``TICKER_SOURCE`` and the options of the fetching and CSV sources."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ticker.config.symbols import SYMBOL_GRAMMAR, normalise_symbol
from ticker.config.values import parse_bool, parse_number, parse_pairs
from ticker.errors import ConfigError

SOURCES = (
    "sim",
    "coinbase",
    "binance",
    "ccxt:EXCHANGE",
    "ccxt:EXCHANGE:trades",
    "alpaca",
    "alpaca:trades",
    "csv:PATH",
    "python:MODULE:NAME",
    "none",
)
_PLAIN_SOURCES = ("sim", "coinbase", "binance", "alpaca", "none")
_TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# An exchange's name for a pair or currency goes into a URL: keep it to safe characters.
# ccxt's unified symbols add / and : (BTC/USDT, BTC/USDT:USDT).
_REMOTE_RE = re.compile(r"^[A-Za-z0-9._/:-]{1,64}$")


def parse_source(raw: str) -> str:
    """Check ``TICKER_SOURCE`` and return it normalised (a ``csv:`` path made absolute)."""
    kind, colon, arg = raw.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind in _PLAIN_SOURCES and not colon:
        return kind
    if kind == "alpaca" and arg.lower() == "trades":
        return "alpaca:trades"
    if kind == "ccxt" and arg:
        return _ccxt_source(raw, arg)
    if kind == "csv" and arg:
        path = Path(arg).expanduser().resolve()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError("TICKER_SOURCE", raw, f"{path} is not a readable file")
        return f"csv:{path}"
    if kind == "python" and _TARGET_RE.match(arg):
        return f"python:{arg}"
    raise ConfigError("TICKER_SOURCE", raw, f"choose one of {', '.join(SOURCES)}")


def _ccxt_source(raw: str, arg: str) -> str:
    """Check ``ccxt:EXCHANGE[:trades]``: ccxt must know the exchange (and stream it for trades)."""
    name, colon, mode = arg.partition(":")
    name, mode = name.strip().lower(), mode.strip().lower()
    if colon and mode != "trades":
        raise ConfigError("TICKER_SOURCE", raw, "expected ccxt:EXCHANGE or ccxt:EXCHANGE:trades")
    if mode:
        import ccxt.pro as family
    else:
        import ccxt as family
    if name not in family.exchanges:
        import ccxt

        why = "has no WebSocket support in ccxt" if name in ccxt.exchanges else "is unknown to ccxt"
        raise ConfigError("TICKER_SOURCE", raw, f"{name!r} {why} (ccxt {ccxt.__version__})")
    return f"ccxt:{name}" + (":trades" if mode else "")


def _remote(raw: str) -> str:
    if not _REMOTE_RE.match(raw):
        raise ValueError(
            f"{raw[:40]!r} is not an exchange's name: 1 to 64 of A-Z a-z 0-9 . _ / : -"
        )
    return raw.upper()


def source_options(get: Callable[[str], str | None], symbols: tuple[str, ...]) -> dict[str, Any]:
    """Read the variables of the fetching sources: URL, names, and the CSV replay."""
    values: dict[str, Any] = {}
    url = get("SOURCE_URL")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError(
                "TICKER_SOURCE_URL", url, "expected a base URL such as https://api.binance.com"
            )
        values["source_url"] = url.rstrip("/")

    raw = get("SOURCE_SYMBOLS")
    if raw is not None:
        pairs = parse_pairs("SOURCE_SYMBOLS", raw, normalise_symbol, _remote)
        untracked = [s for s, _ in pairs if s not in symbols]
        if untracked:
            raise ConfigError(
                "TICKER_SOURCE_SYMBOLS", raw, f"{', '.join(untracked)} not in TICKER_SYMBOLS"
            )
        values["source_symbols"] = pairs
    raw = get("SOURCE_QUOTES")
    if raw is not None:
        values["source_quotes"] = parse_pairs("SOURCE_QUOTES", raw, _remote, _remote)

    raw = get("CSV_SYMBOL")
    if raw is not None:
        try:
            symbol = normalise_symbol(raw)
        except ValueError:
            raise ConfigError("TICKER_CSV_SYMBOL", raw, f"malformed: {SYMBOL_GRAMMAR}") from None
        if symbol not in symbols:
            raise ConfigError("TICKER_CSV_SYMBOL", raw, f"{symbol} is not in TICKER_SYMBOLS")
        values["csv_symbol"] = symbol
    raw = get("CSV_SPEED")
    if raw is not None and raw.lower() != "step":
        try:
            values["csv_speed"] = float(parse_number("TICKER_CSV_SPEED", raw, float, 0.0))
        except ConfigError:
            raise ConfigError(
                "TICKER_CSV_SPEED", raw, "expected step or a speed factor such as 86400"
            ) from None
        if values["csv_speed"] <= 0:
            raise ConfigError("TICKER_CSV_SPEED", raw, "the speed factor must be above 0")
    raw = get("CSV_LOOP")
    if raw is not None:
        values["csv_loop"] = parse_bool("TICKER_CSV_LOOP", raw)
    return values
