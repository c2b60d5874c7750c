"""Load the ``TICKER_*`` settings and validate them once, at start-up.

Order: built-in defaults, then the environment, then the caller's overrides
(tests). Every bad value raises :class:`~ticker.errors.ConfigError` naming the
variable to fix.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ticker import ROOT
from ticker.errors import ConfigError

INSTANCE = ROOT / "instance"  # the default SQLite file lives here
# prometheus_client's own variable: the directory where gunicorn's workers keep their metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DEFAULT_SYMBOLS = "BTC-USD,ETH-USD,SOL-USD,DOGE-USD,AAPL,MSFT,NVDA,TSLA,EUR-USD"
SOURCES = ("sim", "coinbase", "binance", "csv:PATH", "python:MODULE:NAME", "none")
_PLAIN_SOURCES = ("sim", "coinbase", "binance", "none")
_TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# An exchange's name for a pair or currency goes into a URL: keep it to safe characters.
_REMOTE_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")

# The SPEC's grammar, checked on the input as given (before upper-casing, which
# would turn "ﬀ" into "FF"): ASCII only, so nothing in a symbol is ever markup.
SYMBOL_RE = re.compile(r"[A-Za-z0-9^][A-Za-z0-9._/:^=-]{0,31}")
SYMBOL_GRAMMAR = (
    "a symbol is 1 to 32 characters of A-Z 0-9 . - _ / : ^ =, starting with a letter, "
    "a digit or ^ (e.g. BTC-USD, BTC/USDT, BRK.B, ^GSPC, EURUSD=X)"
)

_ORIGIN_RE = re.compile(r"^https?://[a-z0-9.\-\[\]:]+$")

_AGE_RE = re.compile(r"^(\d+)([smhd])$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Retention:
    """Keep events younger than ``max_age`` seconds and at most ``max_events`` of them."""

    max_age: float | None = None
    max_events: int | None = None

    def __bool__(self) -> bool:
        return self.max_age is not None or self.max_events is not None


@dataclass(frozen=True)
class LogSettings:
    """How one process logs: the level, the shape of a line, and a line per request or not."""

    level: str = "INFO"
    format: str = "text"  # text or json
    access_log: bool = False


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one ticker process."""

    database_url: str
    symbols: tuple[str, ...]
    source: str = "sim"
    tick_interval: float = 1.0
    seed: int | None = None
    retention: Retention = field(default_factory=Retention)
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
    source_quotes: tuple[tuple[str, str], ...] | None = None  # None: the source's default
    csv_symbol: str | None = None
    csv_speed: float | None = None  # None: one step per tick interval
    csv_loop: bool = True
    # Internal knobs, not part of the public contract; tests shrink them.
    lease_ttl: float = 5.0
    poll_interval: float = 0.05
    hub_capacity: int = 20000
    busy_retry: float = 20.0  # a busy answer's retry: this many seconds to twice as many
    prune_interval: float | None = None  # None: every minute, or age/10 for short ages


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


def normalise_symbol(raw: str) -> str:
    """Return ``raw`` stripped and upper-cased, or raise ``ValueError`` when it is not a symbol."""
    symbol = raw.strip()
    if not SYMBOL_RE.fullmatch(symbol):
        raise ValueError(f"{raw[:40]!r} is not a symbol: {SYMBOL_GRAMMAR}")
    return symbol.upper()


def parse_bool(name: str, raw: str) -> bool:
    """Return ``raw`` (true/false, yes/no, on/off, 1/0) as a bool; raise ``ConfigError`` if not."""
    word = raw.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ConfigError(name, raw, "expected true or false")
    return word in _TRUE


def _reader(env: Mapping[str, str]) -> Callable[[str], str | None]:
    """Return a reader of ``TICKER_<name>`` in ``env``: stripped, None when unset or blank."""

    def get(name: str) -> str | None:
        value = env.get(f"TICKER_{name}")
        return value.strip() if value is not None and value.strip() else None

    return get


def load_log_settings(environ: Mapping[str, str] | None = None) -> LogSettings:
    """Build :class:`LogSettings` from ``TICKER_LOG_LEVEL``, ``_LOG_FORMAT``, ``_ACCESS_LOG``."""
    get = _reader(os.environ if environ is None else environ)
    raw_level, raw_shape = get("LOG_LEVEL") or "INFO", get("LOG_FORMAT") or "text"
    level, shape = raw_level.upper(), raw_shape.lower()
    if level not in LOG_LEVELS:
        raise ConfigError("TICKER_LOG_LEVEL", raw_level, f"choose one of {', '.join(LOG_LEVELS)}")
    if shape not in LOG_FORMATS:
        raise ConfigError("TICKER_LOG_FORMAT", raw_shape, f"choose one of {', '.join(LOG_FORMATS)}")
    access = parse_bool("TICKER_ACCESS_LOG", get("ACCESS_LOG") or "false")
    return LogSettings(level, shape, access)


def parse_retention(raw: str) -> Retention:
    """Parse ``24h``, ``500000`` or both (``24h,500000``) into a :class:`Retention`."""
    max_age: float | None = None
    max_events: int | None = None
    for part in (p.strip().lower() for p in raw.split(",")):
        if not part:
            continue
        age = _AGE_RE.match(part)
        if age and max_age is None:
            max_age = float(int(age.group(1)) * _AGE_UNITS[age.group(2)])
        elif part.isdigit() and max_events is None:
            max_events = int(part)
        else:
            raise ValueError(raw)
        if max_age == 0 or max_events == 0:
            raise ValueError(raw)
    retention = Retention(max_age, max_events)
    if not retention:  # "," names no limit at all: refuse it rather than keep forever
        raise ValueError(raw)
    return retention


def _number(name: str, raw: str, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(name, raw, f"expected {expected}") from None
    # inf overflows the timers it feeds, and NaN slips past the minimum check.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, raw, "must be a finite number")
    if value < minimum:
        raise ConfigError(name, raw, f"must be at least {minimum}")
    return value


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

    get = _reader(env)
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
        "BUSY_RETRY": 0.1,
        "PRUNE_INTERVAL": 0.1,
    }
    for name, minimum in floats.items():
        raw = get(name)
        if raw is not None:
            values[name.lower()] = float(_number(f"TICKER_{name}", raw, float, minimum))
    ints = {"MAX_SYMBOLS": 1, "MAX_STREAMS": 1, "HUB_CAPACITY": 100, "SEED": 0}
    for name, minimum in ints.items():
        raw = get(name)
        if raw is not None:
            values[name.lower()] = int(_number(f"TICKER_{name}", raw, int, minimum))

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

    values["publish_token"] = get("PUBLISH_TOKEN")

    producer = (get("PRODUCER") or "auto").lower()
    if producer not in ("auto", "off"):
        raise ConfigError("TICKER_PRODUCER", producer, "choose auto or off")
    values["producer"] = producer

    origins = get("CORS_ORIGINS")
    if origins:
        values["cors_origins"] = parse_origins(origins)

    values.update(_source_options(get, values["symbols"]))
    return Settings(**values)


def parse_origins(raw: str) -> tuple[str, ...]:
    """Parse ``TICKER_CORS_ORIGINS``: ``*`` or origins such as ``https://app.example:8443``."""
    origins: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        origin = part.rstrip("/").lower()  # browsers send origins in lower case, no slash
        if origin != "*" and not _ORIGIN_RE.match(origin):
            raise ConfigError(
                "TICKER_CORS_ORIGINS",
                raw,
                f"{part!r} is not an origin: expected * or scheme://host[:port], "
                "e.g. https://app.example",
            )
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def parse_source(raw: str) -> str:
    """Check ``TICKER_SOURCE`` and return it normalised (a ``csv:`` path made absolute)."""
    kind, colon, arg = raw.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind in _PLAIN_SOURCES and not colon:
        return kind
    if kind == "csv" and arg:
        path = Path(arg).expanduser().resolve()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError("TICKER_SOURCE", raw, f"{path} is not a readable file")
        return f"csv:{path}"
    if kind == "python" and _TARGET_RE.match(arg):
        return f"python:{arg}"
    raise ConfigError("TICKER_SOURCE", raw, f"choose one of {', '.join(SOURCES)}")


def _pairs(
    name: str, raw: str, left: Callable[[str], str], right: Callable[[str], str]
) -> tuple[tuple[str, str], ...]:
    """Parse ``A=B,C=D``, checking each side with ``left`` and ``right``."""
    pairs = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        # The last "=": a symbol may hold one (EURUSD=X), an exchange's name never does.
        key, equals, value = (x.strip() for x in part.rpartition("="))
        if not equals:
            raise ConfigError(f"TICKER_{name}", raw, f"{part!r} is not NAME=NAME")
        try:
            pairs.append((left(key), right(value)))
        except ValueError as exc:
            raise ConfigError(f"TICKER_{name}", raw, f"in {part!r}: {exc}") from None
    return tuple(pairs)


def _remote(raw: str) -> str:
    if not _REMOTE_RE.match(raw):
        raise ValueError(f"{raw[:40]!r} is not an exchange's name: 1 to 64 of A-Z a-z 0-9 . _ -")
    return raw.upper()


def _source_options(get: Callable[[str], str | None], symbols: tuple[str, ...]) -> dict[str, Any]:
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
        pairs = _pairs("SOURCE_SYMBOLS", raw, normalise_symbol, _remote)
        untracked = [s for s, _ in pairs if s not in symbols]
        if untracked:
            raise ConfigError(
                "TICKER_SOURCE_SYMBOLS", raw, f"{', '.join(untracked)} not in TICKER_SYMBOLS"
            )
        values["source_symbols"] = pairs
    raw = get("SOURCE_QUOTES")
    if raw is not None:
        values["source_quotes"] = _pairs("SOURCE_QUOTES", raw, _remote, _remote)

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
            values["csv_speed"] = float(_number("TICKER_CSV_SPEED", raw, float, 0.0))
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
