"""One ccxt REST call at a time, and its failure told as a ``SourceError`` that says why.

``Calls(exchange, name)`` hooks the exchange's ``fetch`` (a request starts)
and ``on_rest_response`` (an answer came) to note the request, the HTTP status
and the ``Retry-After`` of the answer.  ``calls(method, *args)`` runs a ccxt
method and turns whatever it raises into one
:class:`~ticker.errors.SourceError`::

    ccxt:binance: GET https://…/api/v3/ticker/24hr?symbols=…: HTTP 429 Too Many Requests
    (Retry-After 45s): rate limited or banned: DDoSProtection: binance 429 …

with ``retry_after`` set, so the producer's back-off honours a 429 or a 418.
The notes are reset at each call and each request, so an error never carries
the status of an earlier answer (a timeout has none).  One call at a time per
exchange: the producer never runs two fetches of a source at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import ccxt

from ticker.errors import SourceError
from ticker.sources._http import parse_retry_after

T = TypeVar("T")

#: What each ccxt failure means, most specific first.
CAUSES: tuple[tuple[type[Exception], str], ...] = (
    (ccxt.RequestTimeout, "no answer in time"),
    (ccxt.RateLimitExceeded, "rate limited"),
    (ccxt.DDoSProtection, "rate limited or banned"),
    (ccxt.ExchangeNotAvailable, "the exchange is unavailable"),
    (ccxt.NetworkError, "network error"),
    (ccxt.BadResponse, "malformed answer"),
    (ccxt.OperationFailed, "the exchange failed the request"),
    (ccxt.BadSymbol, "a symbol the exchange does not know"),
    (ccxt.BaseError, "the exchange refused"),
)

#: What ccxt's parsers raise when an answer has a shape they did not expect.
MALFORMED = (TypeError, KeyError, AttributeError, ValueError, IndexError)


class Calls:
    """Run ccxt calls on one exchange; raise a ``SourceError`` naming ``name`` on failure."""

    def __init__(self, exchange: Any, name: str) -> None:
        self.exchange = exchange
        self.name = name
        self.request = ""  # "GET url" of the request under way
        self.status = ""  # what the exchange answered it, "" until it did
        self.retry_after: float | None = None
        self._watch()

    def __call__(self, method: Callable[..., T], *args: Any) -> T:
        """Return ``method(*args)``; raise a ``SourceError`` saying why when it fails."""
        self._forget("")
        try:
            return method(*args)
        except ccxt.BaseError as exc:
            cause = next(c for kind, c in CAUSES if isinstance(exc, kind))
            raise self.failure(cause, exc) from exc
        except MALFORMED as exc:
            raise self.failure("malformed answer", exc) from exc

    def failure(self, cause: str, exc: Exception) -> SourceError:
        """Return the error for ``exc``: the request, its status, ``Retry-After`` and ``cause``."""
        where = f"{self.name}: {self.request or 'request'}"
        if self.status:
            where += f": HTTP {self.status}"
        if self.retry_after is not None:
            where += f" (Retry-After {self.retry_after:g}s)"
        if isinstance(exc, ccxt.RequestTimeout):
            cause = f"no answer within {self.exchange.timeout / 1000:g}s"
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ccxt.NetworkError) and exc.__cause__ is not None:
            detail += f" ({type(exc.__cause__).__name__})"
        return SourceError(f"{where}: {cause}: {_snippet(detail)}", retry_after=self.retry_after)

    def _forget(self, request: str) -> None:
        self.request, self.status, self.retry_after = request, "", None

    def _watch(self) -> None:
        """Hook the exchange so that each request and its answer are noted."""
        fetch = self.exchange.fetch
        answered = self.exchange.on_rest_response

        def watched_fetch(url: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
            self._forget(f"{method} {url}")
            return fetch(url, method, *args, **kwargs)

        def watched_response(
            code: int, reason: str, url: str, method: str, headers: Any, body: str, *rest: Any
        ) -> Any:
            self.status = f"{code} {reason}".strip()
            self.retry_after = parse_retry_after(headers.get("Retry-After"))
            return answered(code, reason, url, method, headers, body, *rest)

        self.exchange.fetch = watched_fetch
        self.exchange.on_rest_response = watched_response


def _snippet(text: str, size: int = 240) -> str:
    return text if len(text) <= size else text[:size] + "…"
