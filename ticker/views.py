"""The page and the ``/stream`` endpoint.

Each stream logs one line when it opens (or is refused as busy) and one when
it closes, with its request id, so an operator can follow a connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, g, render_template, request

from ticker import params, sse, stream, wire
from ticker.background import ensure_started
from ticker.config import Settings
from ticker.db import get_engine
from ticker.hub import Hub

if TYPE_CHECKING:
    from ticker.broadcast import Broadcaster

bp = Blueprint("views", __name__)
logger = logging.getLogger(__name__)


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
            yield sse.SHUTDOWN_NOTICE
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
    access = _access_atoms(request_id)

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            streams.release()
            seconds = time.monotonic() - watch.started
            logger.info(
                "stream closed",
                extra={
                    "request_id": request_id,
                    "ended": watch.ended,
                    "seconds": round(seconds, 3),
                    "open": streams.open,
                },
            )
            if access is not None:  # gunicorn logs the others; a stream taken over, here
                access["M"] = round(seconds * 1000)
                logging.getLogger("gunicorn.access").info("%(r)s %(s)s", access)

    def end(reason: str) -> None:
        watch.ended = reason
        release()

    try:
        ensure_started(current_app)
        hub: Hub = current_app.extensions["ticker.hub"]
        retry_ms = random.randint(1000, 5000)
        broadcaster = current_app.extensions.get("ticker.broadcaster")
        if access is not None and broadcaster is not None:
            request.environ[wire.TAKEOVER] = _Takeover(broadcaster, symbols, last_id, retry_ms, end)
        else:
            body = stream.events(
                get_engine(),
                hub,
                symbols,
                last_id,
                settings.heartbeat,
                retry_ms=retry_ms,
                streams=streams,
                abort=wire.aborter(request.environ),
                send=wire.direct_sender(request.environ),
            )
    except BaseException:
        end("error")
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
    if wire.TAKEOVER in request.environ:
        return _stream_response(iter(()))  # headers only: the takeover writes the body
    response = _stream_response(_watched(body, hub, watch))
    response.call_on_close(release)
    return response


def _access_atoms(request_id: str) -> dict[str, Any] | None:
    """Return the access-log fields of a stream that can be taken over, else None."""
    environ = request.environ
    if request.method != "GET" or not wire.direct(environ):
        return None
    return {
        "h": request.remote_addr or "-",
        "m": request.method,
        "U": request.path,
        "q": environ.get("QUERY_STRING", ""),
        "r": f"{request.method} {request.full_path.rstrip('?')} {environ['SERVER_PROTOCOL']}",
        "s": "200",
        "a": request.user_agent.string or "-",
        "{x-request-id}o": request_id,
    }


@dataclass
class _Takeover:
    """Serve a stream on its socket, taken over from gunicorn (see ``wire.taking_over``)."""

    broadcaster: Broadcaster
    symbols: list[str]
    last_id: int | None
    retry_ms: int
    end: Callable[[str], None]

    def run(self, client: wire.Client, head: bytes) -> None:
        """Write the stream until it is caught up; the broadcaster serves it from there."""
        self.broadcaster.open(client, head, self.symbols, self.last_id, self.retry_ms, self.end)

    def cancel(self) -> None:
        """Release the stream's slot: an error page went out instead."""
        self.end("error")
