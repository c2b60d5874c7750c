"""``POST /api/ticks``: an outside producer's ticks, appended all or nothing.

Served by :func:`publishing`, a WSGI layer in front of Flask: a single-tick
POST spent more in Flask's per-request machinery (the request and app
contexts, routing, the hooks, the response object) than in its append, and
an outside producer that posts trades one by one is paced by it.  The answer
is the one Flask would give, with every response's headers
(:mod:`ticker.headers`: the request id, the security headers, CORS); the
logic is :func:`answer`, which knows nothing of Flask.  Flask's URL map keeps
the rule (``api.bp``), so the CORS preflight and a 405 know the method.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ticker import headers
from ticker.config import SYMBOL_GRAMMAR, Settings, normalise_symbol
from ticker.errors import RequestError
from ticker.events import Tick, exact_price, exact_size, now_us, parse_ts
from ticker.state import AppState

logger = logging.getLogger(__name__)

PATH = "/api/ticks"
MAX_BATCH = 10_000
MAX_BODY = 8 * 1024 * 1024  # bytes; a full batch with sizes is about 1 MB
# Numbers as Decimal, so no float rounds a price; made once (json.loads with
# these arguments builds a decoder for every body).
_JSON = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def publishing(app: WSGIApp, state: AppState) -> WSGIApp:
    """Wrap ``app`` so that ``POST /api/ticks`` is answered here, everything else by ``app``."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return app(environ, start_response)
        request_id = headers.request_id(environ.get("HTTP_X_REQUEST_ID"))
        status, body = answer(
            state,
            _body(environ),
            environ.get("HTTP_AUTHORIZATION"),
            request_id,
            environ.get("REMOTE_ADDR"),
        )
        extra = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        extra += headers.standard(request_id)
        if state.cors_origins:
            extra += headers.cors(environ.get("HTTP_ORIGIN"), state.cors_origins)
        start_response(f"{status} {HTTPStatus(status).phrase}", extra)
        return [body]

    return middleware


def _body(environ: dict[str, Any]) -> bytes | None:
    """Return the request's body, or None when it is larger than ``MAX_BODY``."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY:
            return None
        return bytes(stream.read(size))
    data = bytes(stream.read(MAX_BODY + 1))  # chunked: gunicorn ends it at the last chunk
    return None if len(data) > MAX_BODY else data


def answer(
    state: AppState,
    data: bytes | None,
    authorization: str | None,
    request_id: str,
    remote: str | None,
) -> tuple[int, bytes]:
    """Append the ticks of a request's body; return the status and the JSON body to send.

    ``data`` is None when the body was larger than ``MAX_BODY``; ``remote``
    is the client's address, for the log line of a refused token.
    """
    try:
        check_token(state.settings, authorization, request_id, remote)
        if data is None:
            raise RequestError(413, f"the body is larger than {MAX_BODY} bytes")
        batch = parse(data, state.settings)
        ids = append(state, batch)
    except RequestError as exc:
        return exc.status, _error(exc.message, **exc.details)
    except PoolTimeout as exc:
        logger.warning("no database connection free: %s", exc)
        return 503, _error("database busy: no connection came free, retry shortly")
    except Exception:
        logger.exception("publish failed", extra={"request_id": request_id})
        return 500, _error("internal error: see the server's log", request_id=request_id)
    logger.debug(
        "published",
        extra={"request_id": request_id, "count": len(ids), "first": ids[0], "last": ids[-1]},
    )
    return 201, ('{"ids":[' + ",".join(map(str, ids)) + "]}\n").encode()


def _error(message: str, **details: Any) -> bytes:
    """Return ``{"error": message, **details}`` as Flask's ``jsonify`` writes it."""
    return (json.dumps({"error": message, **details}, separators=(",", ":")) + "\n").encode()


def check_token(
    settings: Settings, authorization: str | None, request_id: str, remote: str | None
) -> None:
    """Refuse a request without the publish token (403 when publishing is disabled)."""
    if settings.publish_token is None:
        raise RequestError(403, "publishing is disabled: set TICKER_PUBLISH_TOKEN to enable it")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.publish_token.encode()
    ):
        # Say that it failed and from where, never what was sent.
        logger.warning(
            "publish refused: missing or wrong bearer token",
            extra={"request_id": request_id, "remote": remote},
        )
        raise RequestError(401, "missing or wrong bearer token")


def parse(data: bytes, settings: Settings) -> list[Tick]:
    """Return the ticks of a JSON body (one object or a list), or refuse it naming what is wrong."""
    try:
        body = _JSON.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except RecursionError:
        raise RequestError(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    items = body if isinstance(body, list) else [body]
    if not items:
        raise RequestError(400, "the body is an empty list: send at least one tick")
    if len(items) > MAX_BATCH:
        raise RequestError(413, f"too many ticks in one request: {len(items)}, at most {MAX_BATCH}")
    received = now_us()
    return [_tick(item, i, settings, received) for i, item in enumerate(items)]


def _tick(item: Any, index: int, settings: Settings, received_us: int) -> Tick:
    def bad(field: str, message: str, status: int = 422) -> RequestError:
        return RequestError(status, f"item {index}: {field} {message}", index=index, field=field)

    if not isinstance(item, dict):
        raise bad("tick", "must be an object with symbol, price and optional ts and size", 400)
    unexpected = sorted(set(item) - {"symbol", "price", "ts", "size"})
    if unexpected:
        raise bad(unexpected[0], "is not a tick field (symbol, price, ts, size)")
    raw_symbol = item.get("symbol")
    if not isinstance(raw_symbol, str):
        raise bad("symbol", "is required and must be a string")
    try:
        symbol = normalise_symbol(raw_symbol)
    except ValueError:
        raise bad("symbol", f"{raw_symbol[:40]!r} is malformed: {SYMBOL_GRAMMAR}", 400) from None
    if symbol not in settings.symbols:
        raise bad("symbol", f"{symbol!r} is not tracked")
    raw_price = item.get("price")
    if raw_price is None:
        raise bad("price", 'is required: a decimal string such as "67012.35"')
    try:
        price = exact_price(raw_price)
    except ValueError as exc:
        raise bad("price", str(exc)) from None
    ts = received_us
    raw_ts = item.get("ts")
    if raw_ts is not None:
        if not isinstance(raw_ts, str):
            raise bad("ts", 'must be an ISO 8601 string such as "2026-11-21T10:00:00Z"')
        try:
            ts = parse_ts(raw_ts)
        except ValueError as exc:
            raise bad("ts", f"{raw_ts[:40]!r} is not ISO 8601 with a zone ({exc})") from None
    size = None
    raw_size = item.get("size")
    if raw_size is not None:
        try:
            size = exact_size(raw_size)
        except ValueError as exc:
            raise bad("size", str(exc)) from None
    return Tick(symbol, price, ts, size)


def append(state: AppState, batch: list[Tick]) -> list[int]:
    """Append ``batch`` with the appends of other requests meanwhile; 503 when it cannot."""
    try:
        ids = state.appends.append(batch)
    except OperationalError as exc:  # nothing of the batch committed
        cause = str(exc.orig).strip() or type(exc.orig).__name__
        state.writes.failure(cause)
        state.metrics.append_failures.inc()
        logger.warning("append failed: %s", cause)
        raise RequestError(503, f"database unavailable, retry shortly: {cause}") from None
    state.writes.success()  # committed, and handed to this process's hub (GroupCommit)
    return ids
