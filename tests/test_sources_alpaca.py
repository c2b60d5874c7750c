"""The alpaca source against a fake Alpaca on 127.0.0.1: trades, market hours, failures."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from tests.fake_alpaca import CLOCK, KEYS, TRADES, closed, hours, latest, raw, trade
from tests.fakes import (
    HANG,
    SOURCE_TIMEOUT,
    Answer,
    Clock,
    FakeExchange,
    captured,
    due,
    ok,
    source_apps,
)
from tests.servers import run_ticker
from ticker.errors import ConfigError
from ticker.events import parse_ts
from ticker.producer import Producer
from ticker.sources.alpaca import clock as market_clock
from ticker.state import app_state

T1 = "2026-12-02T15:04:05.123456789Z"
T2 = "2026-12-02T15:04:06.5Z"
AAPL_1 = trade("187.4300", "100", T1, 52983525029461)
AAPL_2 = trade("187.4400", "5", T2, 52983525029462)
BRK_1 = trade("4.0000000000000001", "3", "2026-12-02T15:04:04.5Z", 52983525028100)


@pytest.fixture
def alpaca(
    make_app: Callable[..., Flask],
    exchange: FakeExchange,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., tuple[Flask, Producer]]]:
    """Build apps whose producer asks the fake Alpaca (data and clock) on a clock the test moves."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APCA_API_BASE_URL", exchange.url)
    yield from source_apps(make_app, exchange, clock, "alpaca", "AAPL,BRK.B")


def open_market(exchange: FakeExchange, data: Callable[[], Answer] | None = None) -> None:
    """Answer the clock with an open market, and the data API with ``data`` past its script."""

    def then(path: str, query: dict[str, list[str]]) -> Answer:
        if path == CLOCK:
            return hours(True)
        return data() if data is not None else ok({"message": "no script"}, 503)

    exchange.then = then


def trades_in(app: Flask) -> list[tuple[str, str, str | None, int]]:
    """Return ``(symbol, price, size, ts)`` of every event in the app's log, by id."""
    with app_state(app).engine.connect() as conn:
        rows = conn.execute(text("SELECT symbol, price, size, ts FROM ticks ORDER BY id"))
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def run(producer: Producer, clock: Clock, times: int) -> None:
    for _ in range(times):
        producer.produce()
        due(producer, clock)


def test_one_request_a_poll_gives_each_new_trade_once_with_exact_price_size_and_time(
    alpaca: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = alpaca()
    open_market(exchange)
    exchange.script(
        TRADES,
        ok(raw("latest_trades.json")),  # the recorded answer, as Alpaca writes it
        ok(raw("latest_trades.json")),  # nothing traded since: no tick
        latest(AAPL=AAPL_2, BRK_B=BRK_1),  # AAPL traded again, BRK.B did not
    )
    run(producer, clock, 3)
    assert trades_in(app) == [
        ("AAPL", "187.4300", "100", parse_ts("2026-12-02T15:04:05.123456Z")),
        ("BRK.B", "4.0000000000000001", "3", parse_ts("2026-12-02T15:04:04.5Z")),
        ("AAPL", "187.4400", "5", parse_ts(T2)),
    ]
    asked = [r for r in exchange.requests if r.path == TRADES]
    assert [r.query for r in asked] == [{"symbols": ["AAPL,BRK.B"], "feed": ["iex"]}] * 3
    assert exchange.count(CLOCK) == 1  # asked once, at the start
    assert producer.state.errors == 0
    upstream = app.test_client().get("/healthz").get_json()["producer"]["upstream"]
    assert (upstream["market"], upstream["trades"]) == ("open", 3)


def test_a_new_lease_holder_does_not_append_the_trades_already_in_the_log(
    alpaca: Any, exchange: FakeExchange
) -> None:
    app, first = alpaca()
    open_market(exchange, lambda: ok(raw("latest_trades.json")))
    first.produce()
    first.release()
    _, second = alpaca()
    second.produce()
    assert second.state.leader
    assert [t[0] for t in trades_in(app)] == ["AAPL", "BRK.B"]


def test_trades_fetched_but_never_committed_are_taken_again_after_a_take_over(
    alpaca: Any, exchange: FakeExchange
) -> None:
    _, producer = alpaca()
    open_market(exchange, lambda: ok(raw("latest_trades.json")))
    source = producer.source
    assert len(source.next_ticks(0)) == 2
    assert source.next_ticks(0) == []  # the same latest trades: seen
    source.resume([])  # the lease moved before they were committed: the log has none
    assert [t.symbol for t in source.next_ticks(0)] == ["AAPL", "BRK.B"]


def test_a_closed_market_asks_once_for_the_closing_prices_then_rests_without_errors(
    alpaca: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = alpaca(symbols="AAPL,BRK.B,BTC-USD")
    exchange.then = lambda path, query: closed() if path == CLOCK else ok(raw("latest_trades.json"))
    run(producer, clock, 10)
    assert exchange.count(TRADES) == 1  # the closing prices, once
    assert [t[0] for t in trades_in(app)] == ["AAPL", "BRK.B"]
    assert (producer.state.errors, producer.state.last_error) == (0, None)
    client = app.test_client()
    upstream = client.get("/healthz").get_json()["producer"]["upstream"]
    assert upstream["market"] == "closed"
    assert parse_ts(upstream["next_open"]) > time.time() * 1e6 + 86400e6
    rows = {r["symbol"]: r for r in client.get("/api/symbols").get_json()["symbols"]}
    assert {s: (r["closed"], r["stale"]) for s, r in rows.items()} == {
        "AAPL": (True, False),  # its last trade is old, but the market is closed: not stale
        "BRK.B": (True, False),
        "BTC-USD": (False, True),  # not a stock: Alpaca says nothing of it
    }
    assert exchange.count(CLOCK) == 1  # the web side shares the producer's answer


def test_closing_prices_that_failed_are_asked_for_again(
    alpaca: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = alpaca()
    exchange.then = lambda path, query: closed() if path == CLOCK else ok(raw("latest_trades.json"))
    exchange.script(TRADES, ok({"message": "internal error"}, 500))
    run(producer, clock, 5)
    assert exchange.count(TRADES) == 2
    assert producer.state.errors == 1
    assert len(trades_in(app)) == 2


def test_a_clock_that_does_not_answer_leaves_the_web_side_unsure_not_broken(
    alpaca: Any, exchange: FakeExchange
) -> None:
    app, _ = alpaca()
    exchange.then = lambda path, query: ok({"message": "internal error"}, 500)
    client = app.test_client()
    with captured("ticker.sources") as logged:
        for _ in range(5):
            rows = client.get("/api/symbols").get_json()["symbols"]
            assert [r["closed"] for r in rows] == [False, False]  # unknown: judged by staleness
    assert exchange.count(CLOCK) == 1  # asked again only after MIN_GAP
    assert len([m for m in logged if "market hours unknown" in m]) == 1


def test_the_market_opening_is_noticed_at_the_time_the_clock_named(
    alpaca: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = alpaca()
    source = producer.source
    wall = [time.time()]
    source.stocks.clock.wall = lambda: wall[0]
    source.stocks.clock.monotonic = clock
    exchange.script(CLOCK, hours(False, opens_in=5), hours(True))
    exchange.then = lambda path, query: ok(raw("latest_trades.json"))
    run(producer, clock, 3)
    assert exchange.count(CLOCK) == 1
    assert exchange.count(TRADES) == 1  # the closing prices
    wall[0] += 6  # past the named opening: asked again
    clock.now += market_clock.MIN_GAP
    producer.produce()
    assert exchange.count(CLOCK) == 2
    assert exchange.count(TRADES) == 2
    assert source.health.market == "open"
    assert producer.state.errors == 0
    assert len(trades_in(app)) == 2  # the same trades again: not appended twice


def test_missing_keys_stop_start_up_naming_the_variables(
    alpaca: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APCA_API_SECRET_KEY")
    with pytest.raises(ConfigError) as caught:
        alpaca()
    assert caught.value.variable == "APCA_API_SECRET_KEY"
    monkeypatch.delenv("APCA_API_KEY_ID")
    with pytest.raises(ConfigError, match=r"APCA_API_KEY_ID='': unset \(and APCA_API_SECRET_KEY\)"):
        alpaca()


def test_ticker_produce_without_keys_stops_at_start_up_naming_them(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    done = run_ticker("produce", database_url=db_url, source="alpaca", symbols="AAPL")
    assert done.returncode != 0
    assert "APCA_API_KEY_ID" in done.stderr and "APCA_API_SECRET_KEY" in done.stderr


def test_refused_keys_are_counted_with_a_message_naming_the_variables(
    alpaca: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = alpaca()
    open_market(exchange)
    exchange.script(TRADES, ok(raw("error_unauthorized.json"), 401), ok(raw("latest_trades.json")))
    producer.produce()
    error = producer.state.last_error or ""
    assert "HTTP 401: request is not authorized" in error
    assert "APCA_API_KEY_ID" in error and "APCA_API_SECRET_KEY" in error
    assert producer.state.errors == 1
    due(producer, clock)
    producer.produce()
    assert len(trades_in(app)) == 2
    assert producer.state.consecutive_errors == 0


def test_the_clock_refusing_the_keys_is_an_error_too(alpaca: Any, exchange: FakeExchange) -> None:
    _, producer = alpaca()
    exchange.script(CLOCK, ok(raw("error_unauthorized.json"), 403))
    producer.produce()
    assert "/v2/clock: HTTP 403" in (producer.state.last_error or "")
    assert "APCA_API_BASE_URL" in (producer.state.last_error or "")  # paper or live keys
    assert exchange.count(TRADES) == 0


@pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset"])
def test_a_rate_limit_waits_as_long_as_alpaca_asks(
    alpaca: Any, exchange: FakeExchange, clock: Clock, header: str
) -> None:
    # Alpaca sends X-RateLimit-Reset (a Unix time); a proxy in front may send Retry-After.
    headers = {header: "30" if header == "Retry-After" else str(int(time.time()) + 30)}
    app, producer = alpaca()
    open_market(exchange, lambda: ok(raw("latest_trades.json")))
    exchange.script(TRADES, ok(raw("error_rate_limit.json"), 429, **headers))
    producer.produce()
    assert "HTTP 429: rate limit exceeded" in (producer.state.last_error or "")
    assert 28 <= producer.state.retry_at - clock.now <= 30
    started = clock.now
    for second in range(1, 28):
        clock.now = started + second
        producer.produce()
    assert exchange.count(TRADES) == 1  # none within the wait: alpaca-py's own retry is off
    clock.now = started + 31
    producer.produce()
    assert len(trades_in(app)) == 2


def test_malformed_answers_and_timeouts_are_errors_and_good_trades_beside_them_kept(
    alpaca: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = alpaca()
    open_market(exchange)
    exchange.script(
        TRADES,
        ok("{not json"),  # 1
        ok({"bars": {}}),  # 2: not latest trades
        ok({"trades": {"AAPL": {"t": T1, "s": 1, "i": 7}}}),  # 3: no price
        latest(AAPL=trade("-1", "1", T1, 8), BRK_B=BRK_1),  # 4: a negative price; BRK.B kept
        HANG,  # 5: no answer in time
        latest(AAPL=AAPL_2),  # 6: good
    )
    with captured() as logged:
        run(producer, clock, 6)
    assert [(s, p) for s, p, _, _ in trades_in(app)] == [
        ("BRK.B", "4.0000000000000001"),
        ("AAPL", "187.4400"),
    ]
    assert producer.state.errors == 5
    assert producer.state.consecutive_errors == 0
    assert any("not JSON" in m for m in logged)
    assert any(f"no answer within {SOURCE_TIMEOUT:g}s" in m for m in logged)
    assert any("malformed trades: AAPL" in m for m in logged)
