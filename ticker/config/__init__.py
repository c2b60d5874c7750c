"""Load the ``TICKER_*`` settings and validate them once, at start-up.

Order: built-in defaults, then the environment, then the caller's overrides
(tests). Every bad value raises :class:`~ticker.errors.ConfigError` naming the
variable to fix.

Importing this package stays light (no Flask, SQLAlchemy, gevent or
``prometheus_client``): gunicorn's master reads it through
``ticker.gunicorn_conf`` before any worker exists.

- :mod:`~ticker.config.settings`: :class:`Settings` and the loading order.
- :mod:`~ticker.config.values`: the value parsers (booleans, numbers,
  retention, origins, pairs).
- :mod:`~ticker.config.symbols`: the symbol grammar.
- :mod:`~ticker.config.source`: ``TICKER_SOURCE`` and the sources' options.
- :mod:`~ticker.config.logsettings`: the logging settings.
"""

from __future__ import annotations

from ticker.config.logsettings import LOG_FORMATS, LOG_LEVELS, LogSettings, load_log_settings
from ticker.config.settings import (
    DEFAULT_SYMBOLS,
    INSTANCE,
    MULTIPROC_ENV,
    Settings,
    app_settings,
    load_settings,
    multiprocess_dir,
)
from ticker.config.source import SOURCES, parse_source
from ticker.config.symbols import SYMBOL_GRAMMAR, SYMBOL_RE, normalise_symbol
from ticker.config.values import Retention, parse_bool, parse_origins, parse_retention
from ticker.errors import ConfigError

__all__ = [
    "DEFAULT_SYMBOLS",
    "INSTANCE",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MULTIPROC_ENV",
    "SOURCES",
    "SYMBOL_GRAMMAR",
    "SYMBOL_RE",
    "ConfigError",
    "LogSettings",
    "Retention",
    "Settings",
    "app_settings",
    "load_log_settings",
    "load_settings",
    "multiprocess_dir",
    "normalise_symbol",
    "parse_bool",
    "parse_origins",
    "parse_retention",
    "parse_source",
]
