"""Alpaca's REST clients from alpaca-py, made exact, bounded and quiet about failures.

alpaca-py's ``RESTClient`` builds the URL, the key headers and the query of
each call, and that is what we use it for.  Its single request step
(``_one_request``) is replaced, because as shipped it:

- parses the body with ``requests``' JSON, so every price becomes a float;
  here the body is parsed with ``parse_float=Decimal`` and no price is ever
  rounded;
- waits without a timeout; here every request gives up after ``timeout``;
- answers a 429 by sleeping and retrying inside the call, blocking the
  producer and ignoring ``Retry-After``; here every failure becomes one
  :class:`~ticker.errors.SourceError` (with ``retry_after`` for a rate limit),
  so the producer logs, counts and backs off.

The keys come from the environment variables Alpaca's SDKs and documentation
name (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``; alpaca-py itself reads
none); the trading API, which has the market clock, from ``APCA_API_BASE_URL``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import requests
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.trading.client import TradingClient

from ticker.errors import ConfigError, SourceError
from ticker.sources._http import parse_retry_after

KEY_ID = "APCA_API_KEY_ID"
SECRET_KEY = "APCA_API_SECRET_KEY"
TRADING_URL = "APCA_API_BASE_URL"
#: Alpaca's paper trading API: its clock is the live one, and free accounts have paper keys.
DEFAULT_TRADING_URL = "https://paper-api.alpaca.markets"
KEYS_HINT = (
    f"check {KEY_ID} and {SECRET_KEY} (live keys also need "
    f"{TRADING_URL}=https://api.alpaca.markets for the market clock)"
)


def credentials(environ: Mapping[str, str]) -> tuple[str, str]:
    """Return the key id and secret from the environment; refuse to start without both."""
    key, secret = environ.get(KEY_ID, "").strip(), environ.get(SECRET_KEY, "").strip()
    missing = [name for name, value in ((KEY_ID, key), (SECRET_KEY, secret)) if not value]
    if missing:
        raise ConfigError(
            missing[0],
            "",
            f"unset{' (and ' + missing[1] + ')' if len(missing) > 1 else ''}: the alpaca "
            f"sources need an Alpaca API key in {KEY_ID} and {SECRET_KEY} "
            "(app.alpaca.markets, API keys; a free account's will do)",
        )
    return key, secret


def trading_url(environ: Mapping[str, str]) -> str:
    """Return the trading API's base URL (for the clock) from ``APCA_API_BASE_URL``."""
    raw = environ.get(TRADING_URL, "").strip()
    if not raw:
        return DEFAULT_TRADING_URL
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(TRADING_URL, raw, f"expected a base URL such as {DEFAULT_TRADING_URL}")
    # alpaca-py adds the API version itself; Alpaca's SDKs accept the URL with or without it.
    return raw.rstrip("/").removesuffix("/v2")


class _ExactRequests:
    """The request step shared by both clients: a timeout, exact JSON, errors as ``SourceError``."""

    _session: requests.Session
    timeout: float

    def _one_request(self, method: str, url: str, opts: dict[str, Any], retry: int) -> Any:
        where = f"alpaca: {method} {url}"
        try:
            response = self._session.request(method, url, timeout=self.timeout, **opts)
        except requests.Timeout as exc:
            raise SourceError(f"{where}: no answer within {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _status_error(where, response)
        try:
            return json.loads(response.content, parse_float=Decimal, parse_int=Decimal)
        except (ValueError, RecursionError) as exc:
            raise SourceError(
                f"{where}: the answer is not JSON ({exc}): {_snippet(response.content)}"
            ) from exc


def _status_error(where: str, response: requests.Response) -> SourceError:
    """Say what an HTTP error status means: bad keys, a rate limit, or Alpaca's own message."""
    status = response.status_code
    detail = _detail(response.content)
    message = f"{where}: HTTP {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        message += f"; the keys were refused: {KEYS_HINT}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if retry_after is None and status == 429:
        retry_after = _reset_in(response.headers.get("X-RateLimit-Reset"))
    if retry_after is not None:
        message += f" (retry after {retry_after:g}s)"
    return SourceError(message, retry_after=retry_after)


def _detail(body: bytes) -> str:
    """Return Alpaca's message from an error body (``{"code", "message"}``), or a snippet."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return _snippet(body) if body.strip() else ""
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])
    return _snippet(body)


def _snippet(body: bytes, size: int = 120) -> str:
    text = body[:size].decode("utf-8", "replace")
    return repr(text + ("…" if len(body) > size else ""))


def _reset_in(raw: str | None) -> float | None:
    """Return the seconds until Alpaca's ``X-RateLimit-Reset`` (a Unix time), or None."""
    try:
        return None if raw is None else max(0.0, float(raw) - time.time())
    except ValueError:
        return None


class DataClient(_ExactRequests, StockHistoricalDataClient):
    """alpaca-py's stock market-data client, answering raw JSON with exact decimals."""

    def __init__(self, key: str, secret: str, *, url: str | None, timeout: float) -> None:
        super().__init__(key, secret, raw_data=True, url_override=url)
        self.timeout = timeout


class ClockClient(_ExactRequests, TradingClient):
    """alpaca-py's trading client, used for the market clock only."""

    def __init__(self, key: str, secret: str, *, url: str, timeout: float) -> None:
        super().__init__(key, secret, raw_data=True, url_override=url)
        self.timeout = timeout
