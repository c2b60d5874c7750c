"""The logging settings: ``TICKER_LOG_LEVEL``, ``TICKER_LOG_FORMAT`` and ``TICKER_ACCESS_LOG``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ticker.config.values import env_reader, parse_bool
from ticker.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogSettings:
    """How one process logs: the level, the shape of a line, and a line per request or not."""

    level: str = "INFO"
    format: str = "text"  # text or json
    access_log: bool = False


def load_log_settings(environ: Mapping[str, str] | None = None) -> LogSettings:
    """Build :class:`LogSettings` from ``TICKER_LOG_LEVEL``, ``_LOG_FORMAT``, ``_ACCESS_LOG``."""
    get = env_reader(os.environ if environ is None else environ)
    raw_level, raw_shape = get("LOG_LEVEL") or "INFO", get("LOG_FORMAT") or "text"
    level, shape = raw_level.upper(), raw_shape.lower()
    if level not in LOG_LEVELS:
        raise ConfigError("TICKER_LOG_LEVEL", raw_level, f"choose one of {', '.join(LOG_LEVELS)}")
    if shape not in LOG_FORMATS:
        raise ConfigError("TICKER_LOG_FORMAT", raw_shape, f"choose one of {', '.join(LOG_FORMATS)}")
    access = parse_bool("TICKER_ACCESS_LOG", get("ACCESS_LOG") or "false")
    return LogSettings(level, shape, access)
