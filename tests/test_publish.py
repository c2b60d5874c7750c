"""``POST /api/ticks`` in front of Flask (``ticker.publish``): Flask's answers, headers and all.

The API tests post through it with Flask's test client; these compare it with
the Flask view it stands in front of, and post to real gunicorn.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from tests.fakes import QUIET, SQLITE_ONLY, TOKEN
from tests.servers import Server
from ticker import log
from ticker.publish import MAX_BODY
from ticker.state import app_state

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
OK = {"symbol": "AAPL", "price": "230.10", "ts": "2026-11-21T10:00:00Z"}
STANDARD = ("X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options")
CASES: list[tuple[str, Any, dict[str, str]]] = [
    ("one tick", OK, AUTH),
    ("a batch", [OK, {**OK, "price": "231", "size": "0.5"}], AUTH),
    ("a bad price", [OK, {**OK, "price": "1e5"}], AUTH),
    ("an untracked symbol", {**OK, "symbol": "NOPE"}, AUTH),
    ("not JSON", "{", AUTH),
    ("an empty list", [], AUTH),
    ("too many ticks", [OK] * 10_001, AUTH),
    ("no token", OK, {"Content-Type": "application/json"}),
    ("a wrong token", OK, {**AUTH, "Authorization": "Bearer nope"}),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("body", "given"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_publishing_layer_answers_as_the_flask_view_does(
    make_app: Callable[..., Flask], body: Any, given: dict[str, str]
) -> None:
    app = make_app(**QUIET, cors_origins="https://app.example")
    engine = app_state(app).engine
    flask_only = Client(lambda environ, start: Flask.wsgi_app(app, environ, start))
    data = body if isinstance(body, str) else json.dumps(body)
    answers = []
    for client in (app.test_client(), flask_only):
        before = log.head(engine)
        headers = {**given, "X-Request-ID": "req-1", "Origin": "https://app.example"}
        response = client.post("/api/ticks", data=data, headers=headers)
        answer = response.get_json()
        if "ids" in answer:  # each appended its own: the same count, following on
            assert answer["ids"] == list(range(before + 1, log.head(engine) + 1))
            answer = len(answer["ids"])
        else:
            assert log.head(engine) == before  # nothing of a refused batch written
        kept = {k: response.headers.get(k) for k in (*STANDARD, "X-Request-ID", "Vary")}
        cors = response.headers.get("Access-Control-Allow-Origin")
        answers.append((response.status_code, response.mimetype, answer, kept, cors))
    assert answers[0] == answers[1]
    assert answers[0][3]["X-Request-ID"] == "req-1"
    assert answers[0][4] == "https://app.example"


@SQLITE_ONLY
def test_a_body_over_the_limit_is_refused_naming_it(make_app: Callable[..., Flask]) -> None:
    app = make_app(**QUIET)
    response = app.test_client().post("/api/ticks", data=b" " * (MAX_BODY + 1), headers=AUTH)
    assert response.status_code == 413
    assert str(MAX_BODY) in response.get_json()["error"]
    assert log.head(app_state(app).engine) == 0


@pytest.mark.server
@SQLITE_ONLY
def test_gunicorn_serves_publishes_on_one_keep_alive_connection(
    serve: Callable[..., Server],
) -> None:
    """Through real gunicorn: answers, headers, and the connection kept for the next POST."""
    server = serve(workers=1)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        answers = []
        for n, body in enumerate([OK, [OK, OK], {**OK, "price": "x"}, OK]):
            headers = {**AUTH, "X-Request-ID": f"keep-{n}"}
            conn.request("POST", "/api/ticks", body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            payload = json.loads(response.read())
            assert response.getheader("X-Request-ID") == f"keep-{n}"
            assert response.getheader("Content-Type") == "application/json"
            assert all(response.getheader(name) for name in STANDARD)
            answers.append((response.status, payload))
    finally:
        conn.close()
    assert [status for status, _ in answers] == [201, 201, 422, 201]
    assert [a["ids"] for _, a in answers if "ids" in a] == [[1], [2, 3], [4]]
    assert answers[2][1]["field"] == "price" and answers[2][1]["index"] == 0
    ticks = server.get("/api/ticks?symbol=AAPL")["ticks"]
    assert [t["id"] for t in ticks] == [1, 2, 3, 4]
