"""Writes never wait behind stream reads: the streams read the log through a pool of their own.

A reconnect storm that replays from the log can take every connection the
streams have; publishing, the producer's reads and ``/healthz`` use the app's
pool and keep answering.  The tests hold every connection of the streams'
pool, on SQLite and PostgreSQL, and use the rest of the app meanwhile; and,
when the app's own pool has none left, its requests get a 503 that says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tests.fakes import QUIET, SYMBOLS, TOKEN
from ticker import lifecycle
from ticker.state import app_state
from ticker.stream.cursor import Cursor, Subscription, catch_up
from ticker.stream.slots import Streams


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(**QUIET, stream_readers=2)
    lifecycle.start(app_state(app), broadcast=False)  # the follower: its hub answers openings
    return app


def every_connection(engine: Engine) -> ExitStack:
    """Check out every connection ``engine``'s pool can give, held until the stack closes."""
    stack = ExitStack()
    pool: Any = engine.pool
    for _ in range(pool.size() + pool._max_overflow):
        stack.enter_context(engine.connect())
    return stack


def post(app: Flask, ticks: list[dict[str, str]]) -> Any:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return app.test_client().post("/api/ticks", json=ticks, headers=auth)


def opening(app: Flask) -> Iterator[bytes]:
    """A fresh stream's opening on ``app``'s parts, as a request would run it."""
    state = app_state(app)
    asked = Subscription(tuple(SYMBOLS), None, retry_ms=1000)
    return catch_up(state.stream_engine, state.hub, Cursor(SYMBOLS), asked, Streams(10))


def test_publishing_and_health_answer_while_the_streams_hold_every_connection(
    app: Flask,
) -> None:
    state = app_state(app)
    assert state.stream_engine.pool.size() == 2  # TICKER_STREAM_READERS
    first = post(app, [{"symbol": "BTC-USD", "price": "1.5"}]).json["ids"]
    with every_connection(state.stream_engine):
        answer = post(app, [{"symbol": s, "price": "2.25"} for s in SYMBOLS])
        assert answer.status_code == 201, answer.json
        ids = answer.json["ids"]
        assert ids == list(range(first[0] + 1, first[0] + 4))
        health = app.test_client().get("/healthz")
        assert health.status_code == 200 and health.json["status"] == "ok"
        page = app.test_client().get("/api/ticks?symbol=AAPL")
        assert [t["id"] for t in page.json["ticks"]] == ids[2:]
        # A fresh stream the hub can answer opens meanwhile too: no query at all.
        state.follower.poll()
        messages = list(opening(app))
        assert messages[1].startswith(f"id: {ids[-1]}\nevent: snapshot\n".encode())


def exhausted(engine: Engine) -> ExitStack:
    """Check out connections from ``engine`` until none comes free (its timeout made short)."""
    pool: Any = engine.pool
    pool._timeout = 0.2  # QueuePool's wait for a free connection; 30 s in ticker
    stack = ExitStack()
    try:
        while True:
            stack.enter_context(engine.connect())
    except PoolTimeout:
        return stack


def test_an_exhausted_pool_is_a_503_naming_it_and_the_app_recovers(app: Flask) -> None:
    state = app_state(app)
    client = app.test_client()
    busy = "database busy: no connection came free, retry shortly"
    with exhausted(state.engine):
        answer = post(app, [{"symbol": "BTC-USD", "price": "1.5"}])
        assert (answer.status_code, answer.json["error"]) == (503, busy)
        page = client.get("/api/ticks?symbol=BTC-USD")
        assert (page.status_code, page.json["error"]) == (503, busy)
    with state.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ticks")).scalar() == 0  # nothing written
    answer = post(app, [{"symbol": "BTC-USD", "price": "1.5"}])
    assert answer.status_code == 201, answer.json
    page = client.get("/api/ticks?symbol=BTC-USD")
    assert [t["id"] for t in page.json["ticks"]] == answer.json["ids"]
