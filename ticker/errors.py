"""Errors raised by ticker, and the one helper that turns them into JSON.

Tree::

    TickerError
    ├── ConfigError        a TICKER_* variable has a bad value (stops start-up)
    ├── RequestError       a client sent something we refuse (carries the status)
    └── SourceError        a price source failed this interval (counted, backed off)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Response

    from ticker.events import Tick


class TickerError(Exception):
    """Base of every error ticker raises on purpose."""


class ConfigError(TickerError):
    """Name the configuration variable whose value is wrong, and why."""

    def __init__(self, variable: str, value: str, reason: str) -> None:
        super().__init__(f"{variable}={value!r}: {reason}")
        self.variable = variable


class RequestError(TickerError):
    """Refuse a request with ``status`` and a JSON body naming what was wrong."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


class SourceError(TickerError):
    """Report that a source could not give this interval's ticks.

    ``retry_after`` (seconds) is the soonest the source may be asked again, as a
    rate limit demands it; ``ticks`` are what it did get before failing, so a
    partial answer is not thrown away.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, ticks: Sequence[Tick] = ()
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.ticks = list(ticks)


def error_response(status: int, message: str, **details: Any) -> Response:
    """Return ``{"error": message, **details}`` with ``status``."""
    # Imported here, not at the top: the errors are also raised where Flask is
    # not needed (gunicorn's master, `ticker serve` before it hands over), and
    # every import there lengthens a restart's gap, with nothing listening.
    from flask import jsonify

    response = jsonify({"error": message, **details})
    response.status_code = status
    return response
