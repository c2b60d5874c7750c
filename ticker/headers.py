"""What every response carries: a request id, security headers and, if configured, CORS.

- **Request id.** ``X-Request-ID`` from the caller (a proxy's ``$request_id``)
  when it is a sane token, else a new one; kept in ``g.request_id`` for the
  log lines and echoed in the response.
- **Security headers** on every response: ``nosniff``, no referrer, no framing,
  and a deny-all ``Content-Security-Policy`` unless the view set its own (the
  page does, allowing only its own scripts and styles).
- **CORS** for ``/stream`` and ``/api/`` per ``TICKER_CORS_ORIGINS``: an allowed
  ``Origin`` is echoed (or ``*``), and a preflight ``OPTIONS`` is answered
  ``204`` with the methods the URL takes and the headers we read, so a page on
  another origin can open the stream and ``POST /api/ticks`` with its token.
  An origin that is not allowed gets no CORS header and the browser refuses.
  Credentials (cookies) are never allowed: the API takes a bearer token.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from ticker.state import app_state

DEFAULT_POLICY = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": DEFAULT_POLICY,
}
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Request-ID"
EXPOSE_HEADERS = "Retry-After, X-Request-ID"
PREFLIGHT_MAX_AGE = "7200"  # seconds; Chromium caps it there
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def init_app(app: Flask) -> None:
    """Register the request id, security headers and CORS (``TICKER_CORS_ORIGINS``) on ``app``."""
    app.before_request(_assign_request_id)
    if app_state(app).cors_origins:
        app.before_request(_answer_preflight)
        app.after_request(_allow_origin)
    app.after_request(_secure)


def request_id(header: str | None) -> str:
    """Return the caller's ``X-Request-ID`` when it is a sane token, else a new id."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def standard(request_id: str) -> list[tuple[str, str]]:
    """Return the headers of every response: the security headers and the request id.

    For an answer made outside Flask (``POST /api/ticks``, :mod:`ticker.publish`).
    """
    return [*SECURITY_HEADERS.items(), ("X-Request-ID", request_id)]


def cors(origin: str | None, origins: tuple[str, ...]) -> list[tuple[str, str]]:
    """Return the CORS headers of an answer (not a preflight) on a CORS path to ``origin``."""
    found = [] if "*" in origins else [("Vary", "Origin")]  # caches must not mix origins
    allowed = _allowed(origin, origins)
    if allowed is not None:
        found += [
            ("Access-Control-Allow-Origin", allowed),
            ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
        ]
    return found


def _assign_request_id() -> None:
    g.request_id = request_id(request.headers.get("X-Request-ID"))


def _secure(response: Response) -> Response:
    # One pass over the headers: four ``setdefault`` calls cost a small request 4 %.
    headers = response.headers
    present = {name.lower() for name, _ in headers.items()}
    headers.extend([(k, v) for k, v in SECURITY_HEADERS.items() if k.lower() not in present])
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


def _cors_path(path: str) -> bool:
    return path == "/stream" or path.startswith("/api/")


def _allowed(origin: str | None, origins: tuple[str, ...]) -> str | None:
    """Return the value of ``Access-Control-Allow-Origin`` for ``origin``, if it is allowed."""
    if not origin:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.rstrip("/").lower() in origins else None


def _allowed_origin() -> str | None:
    """Return the value of ``Access-Control-Allow-Origin`` for this request, if any."""
    if not _cors_path(request.path):
        return None
    return _allowed(request.headers.get("Origin"), app_state().cors_origins)


def _answer_preflight() -> Response | None:
    if not _is_preflight():
        return None
    wanted = request.headers["Access-Control-Request-Method"]
    allowed = _allowed_origin()
    if allowed is None:
        return None  # Flask's own OPTIONS answer, without CORS: the browser refuses
    try:
        adapter = current_app.url_map.bind_to_environ(request.environ)
        methods = sorted(set(adapter.allowed_methods()) - {"OPTIONS"})
    except HTTPException:
        return None
    if wanted.upper() not in methods:
        return None
    response = Response(status=204)
    response.headers["Access-Control-Allow-Origin"] = allowed
    response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
    response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    if allowed != "*":
        response.headers.add("Vary", "Origin")
    return response


def _is_preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _allow_origin(response: Response) -> Response:
    if not _cors_path(request.path) or "Access-Control-Allow-Origin" in response.headers:
        return response  # not ours, or a preflight already answered
    # Only _answer_preflight grants a preflight.
    origin = None if _is_preflight() else request.headers.get("Origin")
    response.headers.extend(cors(origin, app_state().cors_origins))
    return response
