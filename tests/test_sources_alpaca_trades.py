"""alpaca:trades against a fake Alpaca stream (websockets, msgpack) and clock on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from flask import Flask
from sqlalchemy import text

from tests.fake_alpaca import (
    CLOCK,
    DROP,
    KEYS,
    FakeStream,
    closed,
    hours,
    parse_ts_ns,
    trade_frame,
)
from tests.fakes import (
    Answer,
    Clock,
    FakeExchange,
    captured,
    eventually,
    log_rows,
    ok,
    source_apps,
)
from tests.servers import Server
from ticker.producer import Producer
from ticker.sources.alpaca import clock as market_clock
from ticker.sources.alpaca.trades import stream_url
from ticker.state import app_state

T1 = "2026-12-02T15:04:05.123456789Z"
T2 = "2026-12-02T15:04:05.5Z"
T3 = "2026-12-02T15:04:06Z"


@pytest.fixture
def stream() -> Iterator[FakeStream]:
    fake = FakeStream()
    yield fake
    fake.close()


@pytest.fixture
def trades(
    make_app: Callable[..., Flask],
    exchange: FakeExchange,
    stream: FakeStream,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., tuple[Flask, Producer]]]:
    """Build apps streaming from the fake, the clock answered by the fake HTTP Alpaca."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APCA_API_BASE_URL", exchange.url)
    market_is_open(exchange, True)
    builder = source_apps(make_app, exchange, clock, "alpaca:trades", "AAPL,BRK.B")
    build = next(builder)
    yield lambda **config: build(**{"source_url": stream.url, **config})
    next(builder, None)


def market_is_open(exchange: FakeExchange, is_open: bool) -> None:
    def answer(path: str, query: dict[str, list[str]]) -> Answer:
        if path != CLOCK:
            return ok({"message": "not here"}, 404)
        return hours(True) if is_open else closed()

    exchange.then = answer


def trades_in(app: Flask) -> list[tuple[str, str, str | None, int]]:
    with app_state(app).engine.connect() as conn:
        rows = conn.execute(text("SELECT symbol, price, size, ts FROM ticks ORDER BY id"))
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def produce_until(producer: Producer, app: Flask, count: int) -> list[Any]:
    """Run the producer until the log holds ``count`` trades; return them."""

    def enough() -> list[Any]:
        producer.produce()
        rows = trades_in(app)
        return rows if len(rows) >= count else []

    return eventually(enough, f"{count} trades in the log", 15)


def us(when: str) -> int:
    return parse_ts_ns(when) // 1000


def test_streamed_trades_become_ticks_with_their_price_size_and_time(
    trades: Any, stream: FakeStream
) -> None:
    app, producer = trades()
    producer.produce()  # takes the lease; the market is open: the stream opens
    eventually(lambda: stream.subscribed, "the subscription")
    stream.send(
        trade_frame("AAPL", 101, 187.43, 100, T1),
        trade_frame("BRK.B", 7, 0.0001, 3, T2),
        trade_frame("AAPL", 102, 187.4, 5, T3),
    )
    assert produce_until(producer, app, 3) == [
        ("AAPL", "187.43", "100", us(T1)),  # nanoseconds truncated to microseconds
        ("BRK.B", "0.0001", "3", us(T2)),
        ("AAPL", "187.4", "5", us(T3)),
    ]
    assert stream.content_types == ["application/msgpack"]  # what alpaca-py negotiates
    assert stream.subscribed == [["AAPL", "BRK.B"]]
    health = app.test_client().get("/healthz").get_json()["producer"]["upstream"]
    assert (health["connected"], health["market"], health["trades"]) == (True, "open", 3)
    assert producer.state.errors == 0


def test_a_dropped_connection_reconnects_and_no_trade_is_appended_twice(
    trades: Any, stream: FakeStream
) -> None:
    app, producer = trades()
    producer.produce()
    eventually(lambda: stream.subscribed, "the subscription")
    stream.send(trade_frame("AAPL", 101, 187.43, 100, T1), trade_frame("AAPL", 102, 187.44, 1, T2))
    produce_until(producer, app, 2)
    stream.send(DROP)
    eventually(lambda: stream.connects == 2 and len(stream.subscribed) == 2, "a reconnect")
    # The venue sends the last trade again after the reconnect, then a new one.
    stream.send(trade_frame("AAPL", 102, 187.44, 1, T2), trade_frame("AAPL", 103, 187.45, 2, T3))
    rows = produce_until(producer, app, 3)
    assert [(s, p) for s, p, _, _ in rows] == [
        ("AAPL", "187.43"),
        ("AAPL", "187.44"),
        ("AAPL", "187.45"),
    ]
    assert producer.source.health.duplicates == 1
    assert producer.source.health.reconnects >= 1


def test_a_malformed_frame_is_skipped_and_the_connection_kept(
    trades: Any, stream: FakeStream
) -> None:
    app, producer = trades()
    producer.produce()
    eventually(lambda: stream.subscribed, "the subscription")
    bad_trade = trade_frame("AAPL", 104, 1.0, 1, T1).replace(b"\xa1p", b"\xa1q")  # no price
    stream.send(
        b"\xc1 not msgpack",
        bad_trade,
        trade_frame("AAPL", 105, 187.5, 10, T3),
    )
    assert [(s, p) for s, p, _, _ in produce_until(producer, app, 1)] == [("AAPL", "187.5")]
    assert producer.source.health.malformed == 2
    assert stream.connects == 1
    assert producer.state.errors == 0


def test_a_closed_market_holds_no_connection_and_counts_no_error(
    trades: Any, stream: FakeStream, exchange: FakeExchange
) -> None:
    market_is_open(exchange, False)
    app, producer = trades()
    for _ in range(5):
        producer.produce()
    assert stream.connects == 0
    assert producer.state.errors == 0
    rows = app.test_client().get("/api/symbols").get_json()["symbols"]
    assert {r["symbol"]: (r["closed"], r["stale"]) for r in rows} == {
        "AAPL": (True, False),
        "BRK.B": (True, False),
    }


@pytest.mark.server
def test_under_gunicorn_only_the_lease_holder_streams_and_every_trade_lands_once(
    serve: Callable[..., Server],
    db_url: str,
    exchange: FakeExchange,
    stream: FakeStream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APCA_API_BASE_URL", exchange.url)
    market_is_open(exchange, True)
    server = serve(source="alpaca:trades", source_url=stream.url, symbols="AAPL", workers=2)
    eventually(lambda: stream.subscribed, "the lease holder's subscription", 20)
    stream.send(*(trade_frame("AAPL", 200 + n, 187.01 + n / 100, n + 1, T1) for n in range(20)))
    eventually(lambda: len(log_rows(db_url)) == 20, "20 trades in the log", 20)
    assert [p for _, p in log_rows(db_url)] == [f"{187.01 + n / 100!r}" for n in range(20)]
    assert stream.connects == 1  # the other worker holds no connection
    assert "source failed" not in server.log_text()


def test_the_stream_closes_with_the_market_and_opens_after_the_last_trade_handed_on(
    trades: Any, stream: FakeStream, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = trades()
    source = producer.source
    wall = [time.time()]
    source.stocks.clock.wall = lambda: wall[0]
    source.stocks.clock.monotonic = clock
    exchange.script(CLOCK, hours(True, closes_in=60), hours(False, opens_in=60), hours(True))
    producer.produce()
    eventually(lambda: stream.subscribed, "the subscription")
    stream.send(trade_frame("AAPL", 101, 187.43, 100, T1))
    produce_until(producer, app, 1)
    wall[0] += 61  # past the close the clock named
    clock.now += market_clock.MIN_GAP
    producer.produce()
    assert source.health.market == "closed"
    eventually(lambda: source.health.connected is False, "the connection closed")
    for _ in range(3):
        producer.produce()
    assert stream.connects == 1
    wall[0] += 61  # past the next open
    clock.now += market_clock.MIN_GAP
    producer.produce()
    eventually(lambda: stream.connects == 2 and len(stream.subscribed) == 2, "open again")
    stream.send(trade_frame("AAPL", 101, 187.43, 100, T1), trade_frame("AAPL", 102, 188, 1, T3))
    rows = produce_until(producer, app, 2)
    assert [(s, p) for s, p, _, _ in rows] == [("AAPL", "187.43"), ("AAPL", "188")]
    assert producer.state.errors == 0
    assert exchange.count(CLOCK) == 3


def test_the_stream_url_follows_the_source_url() -> None:
    assert stream_url(None) == "wss://stream.data.alpaca.markets/v2/iex"
    assert stream_url("http://127.0.0.1:8001") == "ws://127.0.0.1:8001/v2/iex"
    assert stream_url("https://proxy.example/alpaca") == "wss://proxy.example/alpaca/v2/iex"


def test_refused_keys_and_the_stream_s_errors_reconnect_with_back_off_naming_the_keys(
    trades: Any, stream: FakeStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APCA_API_SECRET_KEY", "wrong")
    app, producer = trades()
    with captured("ticker.sources") as logged:
        producer.produce()
        eventually(lambda: stream.connects >= 2, "a second try")
    assert any("auth failed" in m and "APCA_API_KEY_ID" in m for m in logged)
    assert producer.source.health.connected is False
    assert trades_in(app) == []


def test_an_error_message_on_the_stream_reconnects(trades: Any, stream: FakeStream) -> None:
    app, producer = trades()
    producer.produce()
    eventually(lambda: stream.subscribed, "the subscription")
    error = {"T": "error", "code": 406, "msg": "connection limit exceeded"}
    with captured("ticker.sources") as logged:
        stream.send(msgpack.packb([error]))
        eventually(lambda: len(stream.subscribed) == 2, "subscribed again")
        stream.send(trade_frame("AAPL", 301, 190.5, 1, T3))
        rows = produce_until(producer, app, 1)
    assert [(s, p) for s, p, _, _ in rows] == [("AAPL", "190.5")]
    assert stream.connects == 2
    assert any("connection limit exceeded (code 406)" in m for m in logged)


def test_trades_received_still_reach_the_log_when_the_clock_fails(
    trades: Any, stream: FakeStream, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = trades()
    source = producer.source
    wall = [time.time()]
    source.stocks.clock.wall = lambda: wall[0]
    source.stocks.clock.monotonic = clock
    exchange.script(CLOCK, hours(True, closes_in=60), ok({"message": "internal error"}, 500))
    producer.produce()
    eventually(lambda: stream.subscribed, "the subscription")
    stream.send(trade_frame("AAPL", 101, 187.43, 100, T1))
    eventually(lambda: len(source.buffer) == 1, "the trade received")
    wall[0] += 61  # the clock's answer no longer holds, and asking again fails
    clock.now += market_clock.MIN_GAP
    producer.produce()
    assert "internal error" in (producer.state.last_error or "")
    assert [(s, p) for s, p, _, _ in trades_in(app)] == [("AAPL", "187.43")]
