"""The page and the ``/stream`` endpoint."""

from __future__ import annotations

import random
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request

from ticker import params, sse, stream
from ticker.background import ensure_started
from ticker.config import Settings
from ticker.db import get_engine

bp = Blueprint("views", __name__)

BUSY_RETRY_MS = (20_000, 40_000)


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
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _stream_response(body: Any, **headers: str) -> Response:
    response = Response(body, content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.headers.update(headers)
    return response


@bp.get("/stream")
def open_stream() -> Response:
    """Stream the subscribed symbols' events as SSE: snapshot or replay, then live."""
    settings = _settings()
    symbols = params.symbols(request.args.get("symbols"), settings)
    last_id = params.event_id(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    if last_id is None:
        last_id = params.event_id(request.args.get("last_event_id"), "last_event_id")

    streams: stream.Streams = current_app.extensions["ticker.streams"]
    if not streams.acquire():
        wait_ms = random.randint(*BUSY_RETRY_MS)
        busy = {"error": "too many open streams; retry later", "retry_ms": wait_ms}
        notice = sse.retry(wait_ms) + sse.message("busy", busy)
        return _stream_response([notice], **{"Retry-After": str(-(-wait_ms // 1000))})

    ensure_started(current_app)
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        # A client that stops reading must not hold its slot forever.
        sock.settimeout(write_timeout(settings.heartbeat))
    body = stream.events(
        get_engine(),
        current_app.extensions["ticker.hub"],
        symbols,
        last_id,
        settings.heartbeat,
        retry_ms=random.randint(1000, 5000),
        streams=streams,
    )
    response = _stream_response(body)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            streams.release()

    response.call_on_close(release)
    return response
