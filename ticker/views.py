"""The page and the ``/stream`` endpoint.

Each stream logs one line when it opens (or is refused as busy) and one when
it closes (``stream.Slot``), with its request id, so an operator can follow a
connection.
"""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, g, render_template, request

from ticker import candles, lifecycle, params, sse, stream
from ticker.state import AppState, app_state

bp = Blueprint("views", __name__)
logger = logging.getLogger(__name__)

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


# The detail chart's intervals, with their widths in seconds: those of /api/candles.
CHART_INTERVALS = tuple(candles.INTERVALS.items())
CHART_NOTICE = Path("vendor") / "lightweight-charts.NOTICE.txt"


@functools.cache
def _notice_lines(static_folder: str) -> tuple[str, ...]:
    """The vendored chart library's NOTICE, which its licence asks the page to show."""
    text = (Path(static_folder) / CHART_NOTICE).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@bp.get("/")
def index() -> Response:
    """Render the ticker page, under a policy that allows only our own scripts and styles."""
    page = render_template(
        "index.html",
        max_symbols=app_state().settings.max_symbols,
        intervals=CHART_INTERVALS,
        chart_notice=_notice_lines(str(current_app.static_folder)),
    )
    response = Response(page, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = PAGE_POLICY
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
    state = app_state()
    asked = stream.Subscription(
        tuple(params.symbols(request.args.get("symbols"), state.settings)),
        params.last_event_id(
            request.headers.get("Last-Event-ID"), request.args.get("last_event_id")
        ),
        retry_ms=random.randint(1000, 5000),
    )
    slot = state.streams.acquire(g.request_id)
    if slot is None:
        return _busy(state)
    try:
        lifecycle.start_on_request(state, request.environ)
        response = _respond(state, slot, asked)
    except BaseException:
        slot.close("error")
        raise
    logger.info(
        "stream opened",
        extra={
            "request_id": slot.request_id,
            "symbols": ",".join(asked.symbols),
            "last_id": asked.last_id,
            "open": state.streams.open,
        },
    )
    return response


def _respond(state: AppState, slot: stream.Slot, asked: stream.Subscription) -> Response:
    """Pick the stream's write path: its own socket under gunicorn's gevent worker, else WSGI."""
    environ = request.environ
    if state.broadcaster.running and stream.possible(environ):
        slot.on_close = stream.access_line(environ, slot.request_id)  # gunicorn logs no line
        environ[stream.TAKEOVER] = stream.Takeover(state.broadcaster, slot, asked)
        return _stream_response(iter(()))  # headers only: the takeover writes the body
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    body = stream.body(
        state.stream_engine,
        state.hub,
        state.settings.heartbeat,
        slot,
        asked,
        stream.shutting(sock),
    )
    response = _stream_response(body)
    response.call_on_close(slot.close)
    return response


def _busy(state: AppState) -> Response:
    """Answer over ``TICKER_MAX_STREAMS``: a stream that says busy and when to come back."""
    low = int(state.settings.busy_retry * 1000)
    wait_ms = random.randint(low, 2 * low)
    logger.info(
        "stream refused: busy",
        extra={"request_id": g.request_id, "limit": state.streams.limit, "retry_ms": wait_ms},
    )
    busy = {"error": "too many open streams; retry later", "retry_ms": wait_ms}
    notice = sse.retry(wait_ms) + sse.message("busy", busy)
    return _stream_response([notice], **{"Retry-After": str(-(-wait_ms // 1000))})
