"""The coinbase source (ccxt's coinbase, Advanced Trade public API) against the fake Coinbase.

One request for every pair per interval (``product_ids``), then every failure.
The markets load on the first fetch, from the same path the prices come from:
each test lets that first, good interval run before it scripts anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.fake_exchange import (
    HANG,
    Answer,
    FakeVenue,
    malformed,
    ok,
    rate_limited,
    server_error,
    serving,
)
from tests.fakes import Clock, asked_at, captured, due, log_rows, source_apps
from tests.servers import Server, free_port
from ticker.config import ConfigError
from ticker.producer import Producer

PRODUCTS = "/api/v3/brokerage/market/products"
FIRST = [("BTC-USD", "67012.35"), ("ETH-USD", "3456.78")]  # the recorded prices


@pytest.fixture
def venue() -> Iterator[FakeVenue]:
    with serving("coinbase") as fake:
        yield fake


Build = Callable[..., tuple[Flask, Producer]]


@pytest.fixture
def fresh(make_app: Callable[..., Flask], venue: FakeVenue, clock: Clock) -> Iterator[Build]:
    """Build apps whose producer asks the fake Coinbase, on a clock the test moves."""
    yield from source_apps(make_app, venue, clock, "coinbase", "BTC-USD,ETH-USD")


@pytest.fixture
def coinbase(fresh: Build, venue: FakeVenue, clock: Clock) -> Build:
    """Build such apps with the first interval run (the markets loaded), its requests forgotten."""

    def build(**config: Any) -> tuple[Flask, Producer]:
        app, producer = fresh(**config)
        assert producer.produce(), producer.state.last_error
        due(producer, clock)
        venue.requests.clear()
        return app, producer

    return build


def products(venue: FakeVenue, **price: str) -> Answer:
    """Coinbase's products answer for the pairs named (``BTC_USD="1.5"``), prices replaced."""
    rows = {p["product_id"]: p for p in venue.payloads["products"]["products"]}
    chosen = [{**rows[pair.replace("_", "-")], "price": p} for pair, p in price.items()]
    return ok({"products": chosen, "num_products": len(chosen)})


def test_one_request_for_every_pair_gives_the_exact_prices(
    fresh: Build, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = fresh(symbols="BTC-USD,ETH-USD,SHIB-USD")
    assert len(producer.produce()) == 3
    due(producer, clock)
    assert len(producer.produce()) == 3
    assert log_rows(app)[:3] == [*FIRST, ("SHIB-USD", "0.00001234")]
    asks = [r for r in venue.requests if r.path == PRODUCTS and "product_ids" in r.query]
    assert [r.query["product_ids"] for r in asks] == [["BTC-USD", "ETH-USD", "SHIB-USD"]] * 2
    # The markets once (with the currencies ccxt reads alongside), then one request each.
    assert venue.count() == 5 + 2


def test_only_the_good_answers_reach_the_log_through_every_failure(
    coinbase: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = coinbase()
    venue.script(
        PRODUCTS,
        products(venue, BTC_USD="67000.01", ETH_USD="3400.01"),  # 1: good
        server_error(500),  # 2
        HANG,  # 3: no answer in time
        malformed("{not json"),  # 4
        products(venue, BTC_USD="67000.05"),  # 5: ETH left out: skipped, not a failure
        rate_limited("coinbase", "30"),  # 6
        products(venue, BTC_USD="67000.07", ETH_USD="1E-8"),  # 7: not a plain decimal: skipped
        products(venue, BTC_USD="67000.08", ETH_USD="3400.08"),  # 8: good
    )
    for _ in range(8):
        producer.produce()
        due(producer, clock)
    assert log_rows(app)[2:] == [
        ("BTC-USD", "67000.01"),
        ("ETH-USD", "3400.01"),
        ("BTC-USD", "67000.05"),
        ("BTC-USD", "67000.07"),
        ("BTC-USD", "67000.08"),
        ("ETH-USD", "3400.08"),
    ]
    assert producer.state.errors == 4  # the intervals 2, 3, 4 and 6
    assert producer.state.consecutive_errors == 0
    assert venue.count() == 8  # one request per interval, none while backing off


def test_a_rate_limit_is_honoured_while_the_lease_is_kept(
    coinbase: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = coinbase(symbols="BTC-USD")
    venue.script(PRODUCTS, rate_limited("coinbase", "30"), products(venue, BTC_USD="67012.40"))
    assert producer.produce() == []
    assert "HTTP 429" in (producer.state.last_error or "")
    started = clock.now
    for second in range(1, 30):
        clock.now = started + second
        assert producer.produce() == []
        assert producer.state.leader  # still renewing: nobody else takes over to hit the limit
    assert venue.count() == 1
    clock.now = started + 30.0
    assert len(producer.produce()) == 1
    assert venue.count() == 2
    assert log_rows(app)[-1] == ("BTC-USD", "67012.40")


def test_a_retry_after_date_is_honoured(coinbase: Any, venue: FakeVenue, clock: Clock) -> None:
    _app, producer = coinbase(symbols="BTC-USD")
    in_a_minute = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    venue.script(PRODUCTS, ok({}, 503, **{"Retry-After": in_a_minute}))
    producer.produce()
    assert 55 <= producer.state.retry_at - clock.now <= 61


def test_back_off_doubles_per_failure_in_a_row_and_resets_on_success(
    coinbase: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = coinbase(symbols="BTC-USD")  # tick interval 1 s
    venue.script(PRODUCTS, *[server_error()] * 4, products(venue, BTC_USD="1.5"), server_error())
    # Failures 1, 2, 3, 4 wait 1, 2, 4, 8 intervals; the success resets the wait to one.
    assert asked_at(producer, venue, clock, 20)[:6] == [0, 1, 3, 7, 15, 16]
    assert ("BTC-USD", "1.5") in log_rows(app)


def test_healthz_shows_last_success_last_error_and_the_count(
    coinbase: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = coinbase(symbols="BTC-USD")
    venue.script(PRODUCTS, server_error(500, '{"message": "boom"}'))
    producer.produce()
    body = app.test_client().get("/healthz").get_json()["producer"]
    assert body["source"] == "coinbase"
    assert body["ticks"] == 1  # the first interval's
    assert body["errors"] == body["consecutive_errors"] == 1
    assert body["last_success"].endswith("Z")
    assert body["last_error_at"] >= body["last_success"]
    assert "HTTP 500" in body["last_error"] and "boom" in body["last_error"]
    assert body["last_error"].startswith(f"coinbase: GET {venue.url}{PRODUCTS}?product_ids=")
    assert 0 < body["retry_in_s"] <= 1.0


def test_errors_are_logged_with_their_cause(coinbase: Any, venue: FakeVenue) -> None:
    _app, producer = coinbase(symbols="BTC-USD")
    venue.script(PRODUCTS, server_error(502, "<html>bad gateway</html>"))
    with captured() as messages:
        producer.produce()
    assert any("HTTP 502" in m and "bad gateway" in m for m in messages), messages


def test_a_pair_left_out_of_the_answer_is_logged_once_and_skipped(
    coinbase: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = coinbase()
    venue.script(PRODUCTS, *[products(venue, BTC_USD=f"67000.0{i}") for i in range(3)])
    with captured() as messages:
        for _ in range(3):
            producer.produce()
            due(producer, clock)
    assert [s for s, _ in log_rows(app)[2:]] == ["BTC-USD"] * 3
    warnings = [m for m in messages if "ETH-USD" in m]
    assert len(warnings) == 1 and "ETH/USD is not in the answer" in warnings[0]
    assert producer.state.errors == 0


def test_an_unlisted_pair_is_warned_about_once_and_never_asked_for(
    fresh: Build, venue: FakeVenue, clock: Clock
) -> None:
    with captured() as messages:
        app, producer = fresh(symbols="BTC-USD,ZZZ-USD")
        for _ in range(2):
            assert len(producer.produce()) == 1
            due(producer, clock)
    asks = [r.query["product_ids"] for r in venue.requests if "product_ids" in r.query]
    assert asks == [["BTC-USD"]] * 2
    assert len([m for m in messages if "does not list ZZZ-USD" in m]) == 1
    assert log_rows(app) == [("BTC-USD", "67012.35")] * 2


def test_nothing_listening_is_an_error_not_a_crash(fresh: Build) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    _app, producer = fresh(source_url=nowhere, symbols="BTC-USD")
    assert producer.produce() == []
    assert producer.state.errors == 1
    error = producer.state.last_error or ""
    assert error.startswith(f"coinbase: GET {nowhere}/v2/currencies: network error"), error


def test_no_pair_coinbase_can_price_stops_start_up(make_app: Any) -> None:
    with pytest.raises(ConfigError, match="TICKER_SYMBOLS"):
        make_app(source="coinbase", symbols="AAPL,MSFT")


@pytest.mark.server
def test_under_gunicorn_the_log_holds_exactly_the_good_answers(
    serve: Callable[..., Server], venue: FakeVenue
) -> None:
    server = serve(
        workers=2,
        source="coinbase",
        source_url=venue.url,
        symbols="BTC-USD,ETH-USD",
        tick_interval=0.2,
        source_timeout=0.5,
    )
    deadline = time.monotonic() + 30
    while log_rows(server.db_url)[:2] != FIRST:  # the recorded prices
        assert time.monotonic() < deadline, log_rows(server.db_url)
        time.sleep(0.05)
    venue.script(
        PRODUCTS,
        server_error(500),
        products(venue, BTC_USD="67000.03", ETH_USD="3400.03"),
        HANG,
        products(venue, ETH_USD="3.04"),
    )
    venue.always(PRODUCTS, server_error(503))  # past the script: failing for good
    while (got := log_rows(server.db_url))[-1] != ("ETH-USD", "3.04"):
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert set(got) == {
        *FIRST,
        ("BTC-USD", "67000.03"),
        ("ETH-USD", "3400.03"),
        ("ETH-USD", "3.04"),
    }
    assert got[-3:] == [("BTC-USD", "67000.03"), ("ETH-USD", "3400.03"), ("ETH-USD", "3.04")]
    health = leader_health(server, lambda h: "HTTP 503" in (h["last_error"] or ""))
    assert health["errors"] >= 2
    assert health["last_success"] is not None
    assert log_rows(server.db_url) == got  # nothing after the good answers


def leader_health(server: Server, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Ask /healthz until the producing worker (each reports its own counters) is ``ready``."""
    deadline = time.monotonic() + 20
    while True:
        producer: dict[str, Any] = server.get("/healthz")["producer"]
        if producer["this_process"] and ready(producer):
            return producer
        assert time.monotonic() < deadline, f"the producing worker never said so: {producer}"
        time.sleep(0.02)
