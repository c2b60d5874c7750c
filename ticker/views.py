"""The page and the ``/stream`` endpoint.

Each stream logs one line when it opens (or is refused as busy) and one when
it closes, with its request id, so an operator can follow a connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, g, render_template, request

from ticker import params, sse, stream, wire
from ticker.background import ensure_started
from ticker.config import Settings
from ticker.db import get_engine
from ticker.hub import Hub

bp = Blueprint("views", __name__)
logger = logging.getLogger(__name__)

# The last frame of a stream ended by a shutdown: the client reconnects to whoever answers.
SHUTDOWN_NOTICE = b": shutdown, reconnect\n\n"


def write_timeout(heartbeat: float) -> float:
    """Return how long a write may block before the client counts as gone."""
    return max(2.0, 4 * heartbeat)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ticker.settings"]
    return settings


# Only our own files may run or style the page; the data it shows can never become markup.
PAGE_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@bp.get("/")
def index() -> Response:
    """Render the ticker page, under a policy that allows only our own scripts and styles."""
    settings = _settings()
    response = Response(
        render_template("index.html", max_symbols=settings.max_symbols),
        content_type="text/html; charset=utf-8",
    )
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _stream_response(body: Any, **headers: str) -> Response:
    response = Response(body, content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.headers.update(headers)
    return response


@dataclass
class _Watch:
    """What one stream did, for its closing log line."""

    started: float = field(default_factory=time.monotonic)
    ended: str = "client gone"  # until the body says otherwise


def _watched(body: Iterator[bytes], hub: Hub, watch: _Watch) -> Iterator[bytes]:
    """Yield the stream's messages, noting why it ended; after a shutdown, say so."""
    try:
        yield from body
        watch.ended = "shutdown" if hub.closed else "server"
        if hub.closed:
            yield SHUTDOWN_NOTICE
    except Exception as exc:
        if not isinstance(exc, OSError):  # an OSError: a write to the gone client failed
            watch.ended = f"error: {type(exc).__name__}"
        raise
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


@bp.get("/stream")
def open_stream() -> Response:
    """Stream the subscribed symbols' events as SSE: snapshot or replay, then live."""
    settings = _settings()
    symbols = params.symbols(request.args.get("symbols"), settings)
    last_id = params.event_id(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    if last_id is None:
        last_id = params.event_id(request.args.get("last_event_id"), "last_event_id")
    request_id: str = g.request_id

    streams: stream.Streams = current_app.extensions["ticker.streams"]
    if not streams.acquire():
        low = int(settings.busy_retry * 1000)
        wait_ms = random.randint(low, 2 * low)
        logger.info(
            "stream refused: busy",
            extra={"request_id": request_id, "limit": streams.limit, "retry_ms": wait_ms},
        )
        busy = {"error": "too many open streams; retry later", "retry_ms": wait_ms}
        notice = sse.retry(wait_ms) + sse.message("busy", busy)
        return _stream_response([notice], **{"Retry-After": str(-(-wait_ms // 1000))})

    watch = _Watch()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            streams.release()
            logger.info(
                "stream closed",
                extra={
                    "request_id": request_id,
                    "ended": watch.ended,
                    "seconds": round(time.monotonic() - watch.started, 3),
                    "open": streams.open,
                },
            )

    try:
        ensure_started(current_app)
        hub: Hub = current_app.extensions["ticker.hub"]
        body = stream.events(
            get_engine(),
            hub,
            symbols,
            last_id,
            settings.heartbeat,
            retry_ms=random.randint(1000, 5000),
            streams=streams,
            abort=wire.aborter(request.environ),
            send=wire.direct_sender(request.environ),
        )
    except BaseException:
        watch.ended = "error"
        release()
        raise
    logger.info(
        "stream opened",
        extra={
            "request_id": request_id,
            "symbols": ",".join(symbols),
            "last_id": last_id,
            "open": streams.open,
        },
    )
    response = _stream_response(_watched(body, hub, watch))
    response.call_on_close(release)
    return response
