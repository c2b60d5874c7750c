"""Errors raised by ticker, and the one helper that turns them into JSON.

Tree::

    TickerError
    ├── ConfigError        a TICKER_* variable has a bad value (stops start-up)
    └── RequestError       a client sent something we refuse (carries the status)
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


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


def error_response(status: int, message: str, **details: Any) -> Response:
    """Return ``{"error": message, **details}`` with ``status``."""
    response = jsonify({"error": message, **details})
    response.status_code = status
    return response
