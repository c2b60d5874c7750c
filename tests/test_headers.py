"""Headers on every response: security headers, request ids and CORS (Flask's test client)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.fakes import QUIET, SQLITE_ONLY, TOKEN
from ticker.config import load_settings
from ticker.errors import ConfigError

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@SQLITE_ONLY
def test_every_response_carries_the_security_headers(make_app: Callable[..., Flask]) -> None:
    client = make_app(**QUIET).test_client()
    answers = {
        "page": client.get("/"),
        "static": client.get("/static/ticker.js"),
        "api": client.get("/api/symbols"),
        "api error": client.get("/api/ticks?symbol=NOPE"),
        "unknown url": client.get("/nowhere"),
        "publish refused": client.post("/api/ticks", json={"symbol": "AAPL", "price": "1"}),
        "health": client.get("/healthz"),
        "metrics": client.get("/metrics"),
        "stream error": client.get("/stream?symbols=a%20b"),
    }
    for name, response in answers.items():
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert response.headers["X-Frame-Options"] == "DENY", name
        assert response.headers["Referrer-Policy"], name
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], name
    # The page keeps its own policy: its scripts, styles and stream, nothing else.
    page = answers["page"].headers
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert "connect-src 'self'" in page["Content-Security-Policy"]
    assert page["Referrer-Policy"] == "same-origin"
    assert answers["api"].headers["Content-Security-Policy"] == "default-src 'none'; " + (
        "frame-ancestors 'none'"
    )


@SQLITE_ONLY
def test_request_ids_are_taken_from_the_caller_or_made(make_app: Callable[..., Flask]) -> None:
    client = make_app(**QUIET).test_client()
    given = client.get("/api/symbols", headers={"X-Request-ID": "edge-7f3a.1"})
    assert given.headers["X-Request-ID"] == "edge-7f3a.1"
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(made) == 3 and all(len(m) == 32 for m in made)
    # Anything that could forge a log line or is too long is replaced, not echoed.
    for bad in ["two words", "a\\nb", "x" * 200, 'quote"d']:
        answered = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert answered != bad and len(answered) == 32


# ---- CORS ----

ORIGIN = "https://app.example"


def preflight(client: Any, path: str, method: str, origin: str = ORIGIN) -> Any:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


@SQLITE_ONLY
def test_cors_is_off_unless_configured(make_app: Callable[..., Flask]) -> None:
    client = make_app(**QUIET).test_client()
    answer = client.get("/api/symbols", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in answer.headers
    answer = preflight(client, "/api/ticks", "POST")
    assert "Access-Control-Allow-Origin" not in answer.headers


@SQLITE_ONLY
def test_cors_allows_the_configured_origins_on_the_stream_and_the_api(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(**QUIET, cors_origins=f"{ORIGIN}/, http://localhost:3000").test_client()
    for path in ["/api/symbols", "/api/snapshot", "/stream?symbols=NOPE", "/api/ticks?symbol=X"]:
        answer = client.get(path, headers={"Origin": ORIGIN})
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN, path
        assert "Origin" in answer.headers.get_all("Vary"), path
        assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"], path
    # A refused publish is readable by the page too, so it can show why.
    refused = client.post("/api/ticks", json={"symbol": "AAPL"}, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    # Another origin gets no grant (the browser refuses), but caches still vary on Origin.
    other = client.get("/api/symbols", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers.get_all("Vary")
    # The page, health and metrics are not part of the cross-origin API.
    for path in ["/", "/healthz", "/metrics"]:
        answer = client.get(path, headers={"Origin": ORIGIN})
        assert "Access-Control-Allow-Origin" not in answer.headers, path


@SQLITE_ONLY
def test_cors_preflight_for_publishing_and_for_the_stream(make_app: Callable[..., Flask]) -> None:
    client = make_app(**QUIET, cors_origins=ORIGIN).test_client()
    answer = preflight(client, "/api/ticks", "POST")
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert set(answer.headers["Access-Control-Allow-Methods"].split(", ")) >= {"GET", "POST"}
    allowed = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in answer.headers  # a token, never cookies
    stream = preflight(client, "/stream", "GET")
    assert stream.status_code == 204
    assert "last-event-id" in stream.headers["Access-Control-Allow-Headers"].lower()
    # Not for another origin, nor for a method the URL does not take.
    assert (
        "Access-Control-Allow-Origin"
        not in preflight(client, "/api/ticks", "POST", "https://evil.example").headers
    )
    assert "Access-Control-Allow-Origin" not in preflight(client, "/stream", "POST").headers
    # Then the real request, as the browser sends it after the preflight.
    posted = client.post(
        "/api/ticks", json={"symbol": "AAPL", "price": "1.5"}, headers={**AUTH, "Origin": ORIGIN}
    )
    assert posted.status_code == 201
    assert posted.headers["Access-Control-Allow-Origin"] == ORIGIN


@SQLITE_ONLY
def test_cors_wildcard(make_app: Callable[..., Flask]) -> None:
    client = make_app(**QUIET, cors_origins="*").test_client()
    answer = client.get("/api/symbols", headers={"Origin": "https://anywhere.example"})
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight(client, "/api/ticks", "POST").headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("raw", ["app.example", "https://app.example/path", "ftp://x.example"])
def test_a_bad_cors_origin_stops_start_up_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="TICKER_CORS_ORIGINS"):
        load_settings("sqlite:///x.db", {"TICKER_CORS_ORIGINS": raw})
    settings = load_settings("sqlite:///x.db", {"TICKER_CORS_ORIGINS": "HTTPS://App.Example/,*"})
    assert settings.cors_origins == ("https://app.example", "*")
