"""The value parsers: the environment reader, booleans, numbers, retention, origins, pairs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ticker.errors import ConfigError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

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


def env_reader(env: Mapping[str, str]) -> Callable[[str], str | None]:
    """Return a reader of ``TICKER_<name>`` in ``env``: stripped, None when unset or blank."""

    def get(name: str) -> str | None:
        value = env.get(f"TICKER_{name}")
        return value.strip() if value is not None and value.strip() else None

    return get


def parse_bool(name: str, raw: str) -> bool:
    """Return ``raw`` (true/false, yes/no, on/off, 1/0) as a bool; raise ``ConfigError`` if not."""
    word = raw.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ConfigError(name, raw, "expected true or false")
    return word in _TRUE


def parse_number(name: str, raw: str, kind: type[int] | type[float], minimum: float) -> Any:
    """Return ``raw`` as a finite ``kind`` of at least ``minimum``; raise ``ConfigError`` if not."""
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


# Candle intervals: name → width in seconds (buckets aligned to the Unix epoch).
CANDLE_INTERVALS: dict[str, int] = {
    "1s": 1,
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}
# How long candles are kept, by width (seconds; None: for ever).
DEFAULT_CANDLE_RETENTION: tuple[tuple[int, float | None], ...] = (
    (1, 1 * 86400.0),
    (60, 30 * 86400.0),
    (300, 90 * 86400.0),
    (900, 180 * 86400.0),
    (3600, 730 * 86400.0),
    (14400, None),
    (86400, None),
)
_FOREVER = ("forever", "none", "off")


def _age(raw: str) -> float | None:
    word = raw.strip().lower()
    if word in _FOREVER:
        return None
    age = _AGE_RE.match(word)
    if not age or int(age.group(1)) == 0:
        raise ValueError(raw)
    return float(int(age.group(1)) * _AGE_UNITS[age.group(2)])


def parse_candle_retention(raw: str) -> tuple[tuple[int, float | None], ...]:
    """Parse ``TICKER_CANDLE_RETENTION``: one age for every interval, or ``1s=2d,1m=90d``.

    Intervals not named keep their default; ``forever`` keeps them for ever.
    The 24-hour statistics read the 1m and 1h candles, so those are kept a day at least.
    """
    name = "TICKER_CANDLE_RETENTION"
    keep = dict(DEFAULT_CANDLE_RETENTION)
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ConfigError(name, raw, "expected an age like 30d, or pairs like 1s=2d,1m=90d")
    try:
        if len(parts) == 1 and "=" not in parts[0]:
            age = _age(parts[0])
            keep = dict.fromkeys(keep, age)
        else:
            for part in parts:
                interval, equals, value = (x.strip() for x in part.partition("="))
                if not equals or interval.lower() not in CANDLE_INTERVALS:
                    raise ConfigError(
                        name,
                        raw,
                        f"{part!r} is not INTERVAL=AGE; intervals are "
                        + ", ".join(CANDLE_INTERVALS),
                    )
                keep[CANDLE_INTERVALS[interval.lower()]] = _age(value)
    except ValueError as exc:
        raise ConfigError(
            name, raw, f"{exc} is not an age like 30s, 15m, 24h, 7d, or forever"
        ) from None
    for short in (60, 3600):
        age = keep[short]
        if age is not None and age < 86400:
            label = "1m" if short == 60 else "1h"
            raise ConfigError(
                name,
                raw,
                f"{label} candles must be kept 1d at least: the 24-hour statistics read them",
            )
    return tuple(sorted(keep.items()))


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


def parse_pairs(
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
