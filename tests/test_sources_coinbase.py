"""The coinbase source against a fake Coinbase on 127.0.0.1: good answers, then every failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.fakes import (
    HANG,
    Answer,
    Clock,
    FakeExchange,
    asked_at,
    captured,
    due,
    log_rows,
    ok,
    source_apps,
)
from tests.servers import Server, free_port
from ticker.config import ConfigError
from ticker.producer import Producer
from ticker.sources import CoinbaseSource, SourceError

BTC = "/v2/prices/BTC-USD/spot"
ETH = "/v2/prices/ETH-USD/spot"
NOT_FOUND = {"errors": [{"id": "not_found", "message": "Invalid currency"}]}


def spot(pair: str, amount: Any) -> Answer:
    """Coinbase's documented answer: {"data": {"amount": ..., "base": ..., "currency": ...}}."""
    base, currency = pair.split("-")
    return ok({"data": {"amount": amount, "base": base, "currency": currency}})


@pytest.fixture
def coinbase(
    make_app: Callable[..., Flask], exchange: FakeExchange, clock: Clock
) -> Iterator[Callable[..., tuple[Flask, Producer]]]:
    """Build apps whose producer asks the fake exchange, on a clock the test moves."""
    yield from source_apps(make_app, exchange, clock, "coinbase", "BTC-USD,ETH-USD")


def test_good_answers_become_ticks_with_the_exact_prices(coinbase: Any, exchange: Any) -> None:
    app, producer = coinbase()
    exchange.script(BTC, spot("BTC-USD", "67012.35"), spot("BTC-USD", "67012.40"))
    exchange.script(ETH, spot("ETH-USD", "3456.780"), spot("ETH-USD", "0.00001234"))
    assert len(producer.produce()) == 2
    assert len(producer.produce()) == 2
    assert log_rows(app) == [
        ("BTC-USD", "67012.35"),
        ("ETH-USD", "3456.780"),
        ("BTC-USD", "67012.40"),
        ("ETH-USD", "0.00001234"),
    ]
    assert exchange.count(BTC) == exchange.count(ETH) == 2
    assert producer.state.errors == 0


def test_only_the_good_answers_reach_the_log_through_every_failure(
    coinbase: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = coinbase()
    exchange.script(
        BTC,
        spot("BTC-USD", "67000.01"),  # 1: good
        ok({"message": "Internal server error"}, 500),  # 2: a 500
        HANG,  # 3: no answer in time
        ok("{not json", 200),  # 4: malformed JSON
        spot("BTC-USD", "67000.05"),  # 5: good
        ok({"data": {"base": "BTC", "currency": "USD"}}),  # 6: no amount
        spot("BTC-USD", "67000.07"),  # 7: good
    )
    exchange.script(
        ETH,
        spot("ETH-USD", "3400.01"),  # 1: good
        spot("ETH-USD", "3400.02"),  # 2: good, beside BTC's 500: kept
        ok({"message": "slow down"}, 429, **{"Retry-After": "30"}),  # 3: rate limited
        spot("ETH-USD", "3400.04"),  # 4: good
        ok(NOT_FOUND, 404),  # 5: the pair is unknown: skipped, not a failure
        spot("ETH-USD", "1E-8"),  # 6: a price in exponent form is not a plain decimal
        spot("ETH-USD", "3400.07"),  # 7: good
    )
    for _ in range(7):
        producer.produce()
        due(producer, clock)
    assert log_rows(app) == [
        ("BTC-USD", "67000.01"),
        ("ETH-USD", "3400.01"),
        ("ETH-USD", "3400.02"),
        ("ETH-USD", "3400.04"),
        ("BTC-USD", "67000.05"),
        ("BTC-USD", "67000.07"),
        ("ETH-USD", "3400.07"),
    ]
    assert producer.state.errors == 4  # the intervals 2, 3, 4 and 6
    assert producer.state.consecutive_errors == 0
    assert exchange.count() == 14  # every interval asked once per pair, none skipped


def test_a_rate_limit_is_honoured_while_the_lease_is_kept(
    coinbase: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = coinbase(symbols="BTC-USD")
    exchange.script(BTC, ok({"message": "Too many requests"}, 429, **{"Retry-After": "30"}))
    exchange.script(BTC, spot("BTC-USD", "67012.35"))
    assert producer.produce() == []
    assert "HTTP 429" in (producer.state.last_error or "")
    started = clock.now
    for second in range(1, 30):
        clock.now = started + second
        assert producer.produce() == []
        assert producer.state.leader  # still renewing: nobody else takes over to hit the limit
    assert exchange.count(BTC) == 1
    clock.now = started + 30.0
    assert len(producer.produce()) == 1
    assert exchange.count(BTC) == 2
    assert log_rows(app) == [("BTC-USD", "67012.35")]


def test_a_retry_after_date_is_honoured(coinbase: Any, exchange: Any, clock: Clock) -> None:
    _app, producer = coinbase(symbols="BTC-USD")
    in_a_minute = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    exchange.script(BTC, ok({}, 503, **{"Retry-After": in_a_minute}))
    producer.produce()
    assert 55 <= producer.state.retry_at - clock.now <= 61


def test_back_off_doubles_per_failure_in_a_row_and_resets_on_success(
    coinbase: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = coinbase(symbols="BTC-USD")  # tick interval 1 s
    exchange.script(BTC, *[ok({}, 500)] * 4, spot("BTC-USD", "1.5"), ok({}, 500))
    # Failures 1, 2, 3, 4 wait 1, 2, 4, 8 intervals; the success resets the wait to one.
    assert asked_at(producer, exchange, clock, 20)[:6] == [0, 1, 3, 7, 15, 16]
    assert log_rows(app) == [("BTC-USD", "1.5")]


def test_back_off_is_capped_at_a_minute(coinbase: Any, exchange: FakeExchange) -> None:
    _app, producer = coinbase(symbols="BTC-USD")
    exchange.then = lambda path, query: ok({}, 500)
    for _ in range(12):
        producer.state.retry_at = 0.0
        producer.produce()
    assert producer.state.consecutive_errors == 12
    assert producer.state.retry_at - producer.clock() <= 60.0


def test_healthz_shows_last_success_last_error_and_the_count(
    coinbase: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = coinbase(symbols="BTC-USD")
    exchange.script(BTC, spot("BTC-USD", "67012.35"), ok({"message": "boom"}, 500))
    client = app.test_client()
    fresh = client.get("/healthz").get_json()["producer"]
    assert (fresh["source"], fresh["errors"], fresh["last_success"]) == ("coinbase", 0, None)
    producer.produce()
    due(producer, clock)
    producer.produce()
    body = client.get("/healthz").get_json()["producer"]
    assert body["ticks"] == 1
    assert body["errors"] == body["consecutive_errors"] == 1
    assert body["last_success"].endswith("Z")
    assert body["last_error_at"] >= body["last_success"]
    assert "HTTP 500" in body["last_error"] and "boom" in body["last_error"]
    assert body["last_error"].startswith(f"coinbase: GET {exchange.url}{BTC}")
    assert 0 < body["retry_in_s"] <= 1.0


def test_errors_are_logged_with_their_cause(coinbase: Any, exchange: FakeExchange) -> None:
    _app, producer = coinbase(symbols="BTC-USD")
    exchange.script(BTC, ok("<html>bad gateway</html>", 502))
    with captured() as messages:
        producer.produce()
    assert any("HTTP 502" in m and "bad gateway" in m for m in messages), messages


def test_a_missing_pair_is_logged_once_and_skipped(
    coinbase: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = coinbase()
    exchange.script(BTC, *[spot("BTC-USD", f"67000.0{i}") for i in range(3)])
    exchange.script(ETH, *[ok(NOT_FOUND, 404)] * 3)
    with captured() as messages:
        for _ in range(3):
            producer.produce()
            due(producer, clock)
    assert [s for s, _ in log_rows(app)] == ["BTC-USD"] * 3
    warnings = [m for m in messages if "ETH-USD" in m]
    assert len(warnings) == 1 and "Invalid currency" in warnings[0]
    assert producer.state.errors == 0


def test_an_answer_for_another_pair_is_refused(coinbase: Any, exchange: FakeExchange) -> None:
    _app, producer = coinbase(symbols="BTC-USD")
    exchange.script(BTC, spot("BTC-EUR", "61000.00"))
    assert producer.produce() == []
    assert "BTC-EUR" in (producer.state.last_error or "")


def test_nothing_listening_is_an_error_not_a_crash(coinbase: Any) -> None:
    _app, producer = coinbase(source_url=f"http://127.0.0.1:{free_port()}", symbols="BTC-USD")
    assert producer.produce() == []
    assert producer.state.errors == 1
    assert "ConnectError" in (producer.state.last_error or "")


def test_symbols_are_named_as_coinbase_pairs() -> None:
    source = CoinbaseSource(
        ["BTC-USD", "ETH-EUR", "AAPL", "^GSPC", "XBT-USD"], symbol_map={"XBT-USD": "BTC-USD"}
    )
    assert source.names == {"BTC-USD": "BTC-USD", "ETH-EUR": "ETH-EUR", "XBT-USD": "BTC-USD"}
    assert source.base_url == "https://api.coinbase.com"


def test_no_pair_coinbase_can_price_stops_start_up(make_app: Any) -> None:
    with pytest.raises(ConfigError, match="TICKER_SYMBOLS"):
        make_app(source="coinbase", symbols="AAPL,MSFT")


def test_the_source_error_keeps_the_prices_that_came(exchange: FakeExchange) -> None:
    source = CoinbaseSource(["BTC-USD", "ETH-USD"], base_url=exchange.url, timeout=0.3)
    exchange.script(BTC, spot("BTC-USD", "67012.35"))
    exchange.script(ETH, ok({}, 500))
    with pytest.raises(SourceError) as caught:
        source.next_ticks(123)
    assert [(t.symbol, t.price, t.ts) for t in caught.value.ticks] == [("BTC-USD", "67012.35", 123)]
    source.close()


@pytest.mark.server
def test_under_gunicorn_the_log_holds_exactly_the_good_answers(
    serve: Callable[..., Server], exchange: FakeExchange
) -> None:
    exchange.script(
        BTC, spot("BTC-USD", "67000.01"), ok({}, 500), spot("BTC-USD", "67000.03"), ok("[", 200)
    )
    exchange.script(
        ETH, spot("ETH-USD", "3400.01"), spot("ETH-USD", "3400.02"), HANG, spot("ETH-USD", "3.04")
    )
    server = serve(
        workers=2,
        source="coinbase",
        source_url=exchange.url,
        symbols="BTC-USD,ETH-USD",
        tick_interval=0.2,
        source_timeout=0.5,
    )
    expected = {"BTC-USD": ["67000.01", "67000.03"], "ETH-USD": ["3400.01", "3400.02", "3.04"]}
    deadline = time.monotonic() + 30
    while exchange.count() < 10:  # past the script, the fake answers 503 forever
        assert time.monotonic() < deadline, "the producer stopped asking"
        time.sleep(0.05)
    # Every good answer was served before the 503s; wait for the last of them to commit.
    while len(log_rows(server.db_url)) < 5:
        assert time.monotonic() < deadline, f"only {log_rows(server.db_url)} reached the log"
        time.sleep(0.05)
    got = log_rows(server.db_url)
    assert {s: [p for t, p in got if t == s] for s in expected} == expected
    health = leader_health(server, lambda h: "HTTP 503" in (h["last_error"] or ""))
    assert health["errors"] >= 4
    assert health["last_success"] is not None


def leader_health(server: Server, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Ask /healthz until the producing worker (each reports its own counters) is ``ready``."""
    deadline = time.monotonic() + 20
    while True:
        producer: dict[str, Any] = server.get("/healthz")["producer"]
        if producer["this_process"] and ready(producer):
            return producer
        assert time.monotonic() < deadline, f"the producing worker never said so: {producer}"
        time.sleep(0.02)
