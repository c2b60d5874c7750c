"""The :class:`Settings` of one process and their loading: defaults, environment, overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ticker import ROOT
from ticker.config.source import parse_source, source_options
from ticker.config.symbols import SYMBOL_GRAMMAR, normalise_symbol
from ticker.config.values import (
    DEFAULT_CANDLE_RETENTION,
    Retention,
    env_reader,
    parse_candle_retention,
    parse_number,
    parse_origins,
    parse_retention,
)
from ticker.errors import ConfigError

INSTANCE = ROOT / "instance"  # the default SQLite file lives here
# prometheus_client's own variable: the directory where gunicorn's workers keep their metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DEFAULT_SYMBOLS = "BTC-USD,ETH-USD,SOL-USD,DOGE-USD,AAPL,MSFT,NVDA,TSLA,EUR-USD"


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one ticker process."""

    database_url: str
    symbols: tuple[str, ...]
    source: str = "sim"
    tick_interval: float = 1.0
    seed: int | None = None
    retention: Retention = field(default_factory=Retention)
    candle_retention: tuple[tuple[int, float | None], ...] = DEFAULT_CANDLE_RETENTION
    heartbeat: float = 15.0
    max_symbols: int = 50
    max_streams: int = 5000
    publish_token: str | None = None
    producer: str = "auto"
    cors_origins: tuple[str, ...] = ()
    # Sources that fetch: coinbase, binance (base URL, timeout, names) and csv:PATH.
    source_url: str | None = None
    source_timeout: float = 2.0
    source_symbols: tuple[tuple[str, str], ...] = ()  # (our symbol, the exchange's name)
    source_quotes: tuple[tuple[str, str], ...] | None = None  # None: USD, then USDT, USDC
    # Streamed sources (ccxt:EXCHANGE:trades): reconnect a feed silent this long; back-off ceiling.
    source_silence: float = 30.0
    source_backoff: float = 30.0
    csv_symbol: str | None = None
    csv_speed: float | None = None  # None: one step per tick interval
    csv_loop: bool = True
    # Internal knobs, not part of the public contract; tests shrink them.
    lease_ttl: float = 5.0
    poll_interval: float = 0.05
    hub_capacity: int = 20000
    hub_span: float = 60.0  # seconds of events the hub holds when more than hub_capacity
    stream_readers: int = 4  # connections per process for streams' reads of the log
    busy_retry: float = 20.0  # a busy answer's retry: this many seconds to twice as many
    prune_interval: float | None = None  # None: every minute, or age/10 for short ages
    rollup_interval: float = 1.0  # seconds between rollups of the log into candles


def multiprocess_dir() -> str | None:
    """Return the directory shared by the workers' metric files, or None for one process."""
    return os.environ.get(MULTIPROC_ENV) or None


def app_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load the settings of an app: the default database is a SQLite file in ``INSTANCE``."""
    default_url = f"sqlite:///{INSTANCE / 'ticker.db'}"
    settings = load_settings(default_url, overrides=overrides)
    if settings.database_url == default_url:
        INSTANCE.mkdir(parents=True, exist_ok=True)
    return settings


def load_settings(
    default_database_url: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, ``environ`` and ``overrides``."""
    env = dict(os.environ if environ is None else environ)
    for key, value in (overrides or {}).items():
        if value is None:  # None unsets the variable; str(None) would be the value "None"
            env.pop(f"TICKER_{key.upper()}", None)
        else:
            env[f"TICKER_{key.upper()}"] = str(value)

    get = env_reader(env)
    values: dict[str, Any] = {"database_url": get("DATABASE_URL") or default_database_url}

    raw_symbols = get("SYMBOLS") or DEFAULT_SYMBOLS
    symbols: list[str] = []
    for part in raw_symbols.split(","):
        try:
            symbol = normalise_symbol(part)
        except ValueError:
            reason = f"{part.strip()[:40]!r} is malformed: {SYMBOL_GRAMMAR}"
            raise ConfigError("TICKER_SYMBOLS", raw_symbols, reason) from None
        if symbol not in symbols:
            symbols.append(symbol)
    values["symbols"] = tuple(symbols)

    values["source"] = parse_source(get("SOURCE") or "sim")

    floats = {
        "TICK_INTERVAL": 0.01,
        "HEARTBEAT": 0.1,
        "LEASE_TTL": 0.5,
        "POLL_INTERVAL": 0.001,
        "SOURCE_TIMEOUT": 0.05,
        "SOURCE_SILENCE": 0.1,
        "SOURCE_BACKOFF": 0.05,
        "BUSY_RETRY": 0.1,
        "PRUNE_INTERVAL": 0.1,
        "ROLLUP_INTERVAL": 0.05,
        "HUB_SPAN": 0.0,
    }
    for name, minimum in floats.items():
        raw = get(name)
        if raw is not None:
            values[name.lower()] = float(parse_number(f"TICKER_{name}", raw, float, minimum))
    ints = {
        "MAX_SYMBOLS": 1,
        "MAX_STREAMS": 1,
        "HUB_CAPACITY": 100,
        "STREAM_READERS": 1,
        "SEED": 0,
    }
    for name, minimum in ints.items():
        raw = get(name)
        if raw is not None:
            values[name.lower()] = int(parse_number(f"TICKER_{name}", raw, int, minimum))

    raw = get("RETENTION")
    if raw is not None:
        try:
            values["retention"] = parse_retention(raw)
        except ValueError:
            raise ConfigError(
                "TICKER_RETENTION",
                raw,
                "expected an age like 30s, 15m, 24h, 7d, a count "
                "of events like 500000, or both separated by a comma",
            ) from None
    else:
        values["retention"] = Retention(max_age=7 * 86400.0)

    raw = get("CANDLE_RETENTION")
    if raw is not None:
        values["candle_retention"] = parse_candle_retention(raw)

    values["publish_token"] = get("PUBLISH_TOKEN")

    producer = (get("PRODUCER") or "auto").lower()
    if producer not in ("auto", "off"):
        raise ConfigError("TICKER_PRODUCER", producer, "choose auto or off")
    values["producer"] = producer

    origins = get("CORS_ORIGINS")
    if origins:
        values["cors_origins"] = parse_origins(origins)

    values.update(source_options(get, values["symbols"]))
    return Settings(**values)
