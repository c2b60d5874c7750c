"""What the exchange sources share: one HTTP client, errors that say why, symbol names.

Every failure becomes a :class:`~ticker.errors.SourceError` naming the request
and the cause (no answer in time, HTTP status with the exchange's own message,
an answer that is not JSON), with the ``Retry-After`` of a rate limit attached,
so the producer can log it, count it and back off.  JSON is parsed with
``parse_float=Decimal`` so that no price ever passes through a float.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import httpx

from ticker.errors import ConfigError, SourceError
from ticker.events import Tick
from ticker.sources.base import Source

logger = logging.getLogger("ticker.sources")

USER_AGENT = "ticker/0.1"
_CODE_RE = re.compile(r"^[A-Z0-9._]{1,32}$")


class StatusError(SourceError):
    """The exchange answered with an HTTP error status (and maybe its own error code)."""

    def __init__(
        self, message: str, status: int, code: object = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.code = code


def parse_retry_after(raw: str | None, now: datetime | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delay or HTTP date), or None."""
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def remote_names(
    symbols: Sequence[str], explicit: Mapping[str, str], quotes: Mapping[str, str], join: str
) -> dict[str, str]:
    """Map each tracked symbol to the exchange's name for it; leave out those it cannot name.

    ``BTC-USD`` becomes ``BTC`` + ``join`` + the quote currency, renamed by
    ``quotes`` (``{"USD": "USDT"}`` gives Binance's ``BTCUSDT``).  ``explicit``
    names win over the rule.
    """
    names = {}
    for symbol in symbols:
        if symbol in explicit:
            names[symbol] = explicit[symbol]
            continue
        base, dash, quote = symbol.partition("-")
        if dash and _CODE_RE.match(base) and _CODE_RE.match(quote):
            names[symbol] = f"{base}{join}{quotes.get(quote, quote)}"
    return names


class HTTPSource(Source):
    """A source that asks an exchange's public HTTP API for prices."""

    name: ClassVar[str]
    default_url: ClassVar[str]
    default_quotes: ClassVar[Mapping[str, str]] = {}
    join: ClassVar[str] = "-"

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        base_url: str | None = None,
        timeout: float = 2.0,
        symbol_map: Mapping[str, str] | None = None,
        quotes: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = (base_url or self.default_url).rstrip("/")
        self.timeout = timeout
        quotes = self.default_quotes if quotes is None else quotes
        #: tracked symbol -> the exchange's name, in the order of TICKER_SYMBOLS
        self.names = remote_names(symbols, symbol_map or {}, quotes, self.join)
        unnamed = [s for s in symbols if s not in self.names]
        if not self.names:
            raise ConfigError(
                "TICKER_SYMBOLS",
                ",".join(symbols),
                f"{self.name} quotes none of these symbols; track pairs such as BTC-USD "
                "or name them with TICKER_SOURCE_SYMBOLS",
            )
        if unnamed:
            logger.warning(
                "%s: not asking for %s (not a BASE-QUOTE pair; map them with "
                "TICKER_SOURCE_SYMBOLS)",
                self.name,
                ", ".join(unnamed),
            )
        self.missing: set[str] = set()
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        """Return the connection pool, made on first use (in the process that uses it)."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.base_url,
                    timeout=self.timeout,
                    headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                )
            return self._client

    def close(self) -> None:
        """Close the connection pool."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` and return its JSON, prices as ``Decimal``; raise ``SourceError`` if not."""
        where = f"{self.name}: GET {self.base_url}{path}"
        try:
            response = self.client.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise SourceError(f"{where}: no answer within {self.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from exc
        body = response.content
        if response.status_code >= 400:
            code, detail = _error_detail(body)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            message = f"{where}: HTTP {response.status_code}"
            if detail:
                message += f": {detail}"
            if retry_after is not None:
                message += f" (Retry-After {retry_after:g}s)"
            raise StatusError(message, response.status_code, code, retry_after)
        try:
            return json.loads(body, parse_float=Decimal, parse_int=Decimal)
        except (ValueError, RecursionError) as exc:
            raise SourceError(f"{where}: the answer is not JSON ({exc}): {_snippet(body)}") from exc

    def ticks_from(
        self, prices: Mapping[str, str], now_us: int, why: Mapping[str, str] | None = None
    ) -> list[Tick]:
        """Return a tick per tracked symbol the exchange priced; log those it left out.

        ``prices`` is keyed by the exchange's names; ``why`` may say, by the same
        names, why a price is missing.
        """
        why = why or {}
        ticks = [Tick(s, prices[n], now_us) for s, n in self.names.items() if n in prices]
        missing = {s for s, n in self.names.items() if n not in prices}
        if not ticks:
            causes = "; ".join(dict.fromkeys(why.values()))
            raise SourceError(
                f"{self.name}: no price for any of {', '.join(self.names)}"
                + (f": {causes}" if causes else "")
            )
        for symbol in sorted(missing - self.missing):
            name = self.names[symbol]
            logger.warning(
                "%s: no price for %s (%s); skipped%s",
                self.name,
                symbol,
                name,
                f": {why[name]}" if name in why else "",
            )
        if self.missing - missing:
            logger.info(
                "%s: prices again for %s", self.name, ", ".join(sorted(self.missing - missing))
            )
        self.missing = missing
        return ticks


def _error_detail(body: bytes) -> tuple[object, str]:
    """Return the exchange's error code and message from an error body, as best it can."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, _snippet(body) if body.strip() else ""
    if isinstance(data, dict):
        if "msg" in data:  # Binance: {"code": -1121, "msg": "Invalid symbol."}
            return data.get("code"), f"{data['msg']} (code {data.get('code')})"
        errors = data.get("errors")  # Coinbase: {"errors": [{"id": ..., "message": ...}]}
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return first.get("id"), f"{first.get('message')} ({first.get('id')})"
        if "message" in data:
            return data.get("id"), str(data["message"])
    return None, _snippet(body)


def _snippet(body: bytes, size: int = 120) -> str:
    text = body[:size].decode("utf-8", "replace")
    return repr(text + ("…" if len(body) > size else ""))
