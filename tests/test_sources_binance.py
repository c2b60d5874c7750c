"""The binance source (ccxt's binance, spot) against the fake Binance: one request, failures."""

from __future__ import annotations

import json
import logging
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
from tests.servers import Server
from ticker.config import ConfigError
from ticker.producer import Producer

TICKERS = "/api/v3/ticker/24hr"
MARKETS = "/api/v3/exchangeInfo"


@pytest.fixture
def venue() -> Iterator[FakeVenue]:
    with serving("binance") as fake:
        yield fake


@pytest.fixture
def binance(
    make_app: Callable[..., Flask], venue: FakeVenue, clock: Clock
) -> Iterator[Callable[..., tuple[Flask, Producer]]]:
    """Build apps whose producer asks the fake Binance, on a clock the test moves."""
    yield from source_apps(make_app, venue, clock, "binance", "BTC-USD,ETH-USD,AAPL")


def tickers(venue: FakeVenue, **last: Any) -> Answer:
    """Binance's 24 h tickers of the symbols named, their ``lastPrice`` replaced."""
    rows = {row["symbol"]: row for row in venue.payloads["ticker_24hr"]}
    return ok([{**rows[name], "lastPrice": price} for name, price in last.items()])


def asked(venue: FakeVenue) -> list[list[str]]:
    """Return the ``symbols`` list of each request for tickers."""
    return [json.loads(r.query["symbols"][0]) for r in venue.requests if r.path == TICKERS]


def test_one_request_for_all_symbols_gives_the_exact_prices(
    binance: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = binance(symbols="BTC-USD,ETH-USD,SHIB-USD,AAPL")
    assert len(producer.produce()) == 3
    due(producer, clock)
    assert len(producer.produce()) == 3
    # In the order of TICKER_SYMBOLS, with Binance's trailing zeros kept: exactly its strings.
    assert log_rows(app)[:3] == [
        ("BTC-USD", "67012.35000000"),
        ("ETH-USD", "3456.78000000"),
        ("SHIB-USD", "0.00001234"),
    ]
    # The spot markets once (never the futures hosts), then one request per interval;
    # USD is read as USDT (the fake lists no BTC/USD); AAPL is no pair: never asked for.
    assert [r.path for r in venue.requests] == [MARKETS, TICKERS, TICKERS]
    assert asked(venue) == [["BTCUSDT", "ETHUSDT", "SHIBUSDT"]] * 2


def test_a_price_sent_as_a_json_number_keeps_its_digits(binance: Any, venue: FakeVenue) -> None:
    app, producer = binance(symbols="BTC-USD")
    row = dict(venue.payloads["ticker_24hr"][0], lastPrice="@")
    venue.script(TICKERS, ok(json.dumps([row]).replace('"@"', "0.00001234000")))
    producer.produce()
    assert log_rows(app) == [("BTC-USD", "0.00001234000")]


def test_only_the_good_answers_reach_the_log_through_every_failure(
    binance: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = binance()
    venue.script(
        TICKERS,
        tickers(venue, BTCUSDT="67000.01", ETHUSDT="3400.01"),  # good
        server_error(500),
        HANG,  # no answer in time
        malformed(),  # cut off: not JSON
        rate_limited("binance", "45"),
        tickers(venue, BTCUSDT="67000.06"),  # ETH missing from the answer: skipped
        ok({"symbols": "not a list"}),  # the wrong shape
        tickers(venue, BTCUSDT="67000.08", ETHUSDT="1E-8"),  # not a plain decimal: skipped
        rate_limited("binance", "120", status=418),
        tickers(venue, BTCUSDT="67000.10", ETHUSDT="3400.10", SHIBUSDT="0.5"),  # an extra
    )
    for _ in range(10):
        producer.produce()
        due(producer, clock)
    assert log_rows(app) == [
        ("BTC-USD", "67000.01"),
        ("ETH-USD", "3400.01"),
        ("BTC-USD", "67000.06"),
        ("BTC-USD", "67000.08"),
        ("BTC-USD", "67000.10"),
        ("ETH-USD", "3400.10"),
    ]
    assert venue.count(TICKERS) == 10  # one request per interval, none while backing off
    assert venue.count(MARKETS) == 1
    assert producer.state.errors == 6


def test_rate_limits_and_bans_are_waited_out(binance: Any, venue: FakeVenue, clock: Clock) -> None:
    app, producer = binance(symbols="BTC-USD")
    venue.script(
        TICKERS,
        rate_limited("binance", "45"),
        rate_limited("binance", "120", status=418),
        tickers(venue, BTCUSDT="1.00"),
    )
    assert asked_at(producer, venue, clock, 166)[:3] == [0, 45, 165]
    assert log_rows(app)[0] == ("BTC-USD", "1.00")
    assert "HTTP 418" in (producer.state.last_error or "")
    assert "Retry-After 120s" in (producer.state.last_error or "")


def test_an_unlisted_symbol_is_warned_about_once_and_never_asked_for(
    binance: Any, venue: FakeVenue, clock: Clock
) -> None:
    _app, producer = binance(symbols="BTC-USD,ZZZ-USD,ETH-USD")
    with captured() as messages:
        for _ in range(3):
            assert len(producer.produce()) == 2
            due(producer, clock)
    assert asked(venue) == [["BTCUSDT", "ETHUSDT"]] * 3
    about_zzz = [m for m in messages if "ZZZ-USD" in m]
    assert len(about_zzz) == 1 and "does not list ZZZ-USD" in about_zzz[0]
    assert producer.state.errors == 0


def test_a_market_delisted_after_loading_is_dropped_at_the_next_load(
    binance: Any, venue: FakeVenue, clock: Clock
) -> None:
    _app, producer = binance(symbols="BTC-USD,ETH-USD")
    assert len(producer.produce()) == 2
    info = venue.payloads["exchangeInfo"]
    info["symbols"] = [m for m in info["symbols"] if m["symbol"] != "ETHUSDT"]
    due(producer, clock)
    assert producer.produce() == []  # Binance refuses the request naming ETHUSDT (-1121)
    assert "Invalid symbol" in (producer.state.last_error or "")
    with captured() as messages:
        due(producer, clock)
        assert len(producer.produce()) == 1  # the markets loaded again, without ETH
    assert any("does not list ETH-USD" in m for m in messages), messages
    assert venue.count(MARKETS) == 2
    assert asked(venue)[-1] == ["BTCUSDT"]


def test_a_symbol_missing_from_the_answer_is_logged_once(
    binance: Any, venue: FakeVenue, clock: Clock
) -> None:
    app, producer = binance()
    venue.script(TICKERS, *[tickers(venue, BTCUSDT=f"1.0{i}") for i in range(3)])
    venue.script(TICKERS, tickers(venue, BTCUSDT="1.10", ETHUSDT="2.10"))
    with captured("ticker", logging.INFO) as messages:
        for _ in range(4):
            producer.produce()
            due(producer, clock)
    about_eth = [m for m in messages if "ETH-USD" in m and "asking for" not in m]
    assert len(about_eth) == 2  # once when it went missing, once when it came back
    assert "no price for ETH-USD" in about_eth[0] and "ETH/USDT" in about_eth[0]
    assert "prices again for ETH-USD" in about_eth[1]
    assert log_rows(app)[-1] == ("ETH-USD", "2.10")
    assert producer.state.errors == 0


def test_an_answer_without_any_of_our_symbols_is_an_error(binance: Any, venue: FakeVenue) -> None:
    _app, producer = binance()
    venue.script(TICKERS, ok([]))
    assert producer.produce() == []
    assert "no price for any of BTC-USD, ETH-USD" in (producer.state.last_error or "")


def test_the_error_names_the_exchange_the_request_and_the_cause(
    binance: Any, venue: FakeVenue
) -> None:
    _app, producer = binance()
    venue.script(TICKERS, ok({"code": -1000, "msg": "An unknown error occurred."}, 500))
    producer.produce()
    error = producer.state.last_error or ""
    assert error.startswith(f"binance: GET {venue.url}{TICKERS}?symbols=")
    assert "HTTP 500 Internal Server Error: the exchange failed the request" in error
    assert "An unknown error occurred." in error


def test_the_mapping_variables_reach_the_source(binance: Any, venue: FakeVenue) -> None:
    app, producer = binance(
        symbols="BTC-USD,ETH-X", source_quotes="USD=USDC", source_symbols="ETH-X=ethbtc"
    )
    producer.produce()
    assert asked(venue) == [["BTCUSDC", "ETHBTC"]]  # by unified symbol or Binance's own id
    assert log_rows(app) == [("BTC-USD", "67010.12000000"), ("ETH-X", "0.05158000")]


def test_no_symbol_binance_can_price_stops_start_up(make_app: Any) -> None:
    with pytest.raises(ConfigError, match="TICKER_SYMBOLS"):
        make_app(source="binance", symbols="AAPL,^GSPC")


@pytest.mark.server
def test_under_gunicorn_the_log_holds_exactly_the_good_answers(
    serve: Callable[..., Server], venue: FakeVenue
) -> None:
    venue.script(
        TICKERS,
        tickers(venue, BTCUSDT="67000.01", ETHUSDT="3400.01"),
        server_error(500),
        tickers(venue, BTCUSDT="67000.03", ETHUSDT="3400.03"),
        HANG,
        ok("<html>", 200),
        tickers(venue, BTCUSDT="67000.06"),
    )
    server = serve(
        workers=2,
        source="binance",
        source_url=venue.url,
        symbols="BTC-USD,ETH-USD",
        tick_interval=0.2,
        source_timeout=0.5,
    )
    expected = [
        ("BTC-USD", "67000.01"),
        ("ETH-USD", "3400.01"),
        ("BTC-USD", "67000.03"),
        ("ETH-USD", "3400.03"),
        ("BTC-USD", "67000.06"),
    ]
    deadline = time.monotonic() + 30
    # Past the script, the fake answers with its recorded prices again.
    while (got := log_rows(server.db_url))[:5] != expected:
        assert time.monotonic() < deadline and got == expected[: len(got)], got
        time.sleep(0.05)
    assert venue.count(MARKETS) == 1  # only the producing worker asks, and loads once
    assert all(len(r.query["symbols"]) == 1 for r in venue.requests if r.path == TICKERS)
