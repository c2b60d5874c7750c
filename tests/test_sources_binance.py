"""The binance source against a fake Binance on 127.0.0.1: one request for all, then failures."""

from __future__ import annotations

import json
import logging
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
from tests.servers import Server
from ticker.config import ConfigError
from ticker.producer import Producer
from ticker.sources import BinanceSource

PRICE = "/api/v3/ticker/price"
INVALID = {"code": -1121, "msg": "Invalid symbol."}


def prices(**by_name: Any) -> Answer:
    """Binance's documented answer: [{"symbol": "BTCUSDT", "price": "67012.35000000"}, ...]."""
    return ok([{"symbol": name, "price": price} for name, price in by_name.items()])


@pytest.fixture
def binance(
    make_app: Callable[..., Flask], exchange: FakeExchange, clock: Clock
) -> Iterator[Callable[..., tuple[Flask, Producer]]]:
    """Build apps whose producer asks the fake exchange, on a clock the test moves."""
    yield from source_apps(make_app, exchange, clock, "binance", "BTC-USD,ETH-USD,AAPL")


def asked(exchange: FakeExchange) -> list[list[str] | str]:
    """Return what each request asked for: the ``symbols`` list, or one ``symbol``."""
    found: list[list[str] | str] = []
    for request in exchange.requests:
        if "symbols" in request.query:
            found.append(json.loads(request.query["symbols"][0]))
        else:
            found.append(request.query["symbol"][0])
    return found


def test_one_request_for_all_symbols_gives_the_exact_prices(binance: Any, exchange: Any) -> None:
    app, producer = binance()
    exchange.script(PRICE, prices(ETHUSDT="3456.78000000", BTCUSDT="67012.35000000"))
    assert len(producer.produce()) == 2
    # In the order of TICKER_SYMBOLS, with Binance's trailing zeros kept: exactly its strings.
    assert log_rows(app) == [("BTC-USD", "67012.35000000"), ("ETH-USD", "3456.78000000")]
    assert asked(exchange) == [["BTCUSDT", "ETHUSDT"]]  # AAPL is no pair: never asked for
    assert exchange.requests[0].path == PRICE


def test_a_price_sent_as_a_json_number_keeps_its_digits(binance: Any, exchange: Any) -> None:
    app, producer = binance(symbols="BTC-USD")
    exchange.script(PRICE, ok('[{"symbol":"BTCUSDT","price":0.00001234000}]'))
    producer.produce()
    assert log_rows(app) == [("BTC-USD", "0.00001234000")]


def test_only_the_good_answers_reach_the_log_through_every_failure(
    binance: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = binance()
    exchange.script(
        PRICE,
        prices(BTCUSDT="67000.01", ETHUSDT="3400.01"),  # good
        ok({"code": -1000, "msg": "An unknown error occurred."}, 500),
        HANG,  # no answer in time
        ok('[{"symbol": "BTCUSDT", "price": "67000.0', 200),  # cut off: malformed JSON
        ok({"code": -1003, "msg": "Too many requests."}, 429, **{"Retry-After": "45"}),
        prices(BTCUSDT="67000.06"),  # ETH missing from the answer: skipped
        ok({"symbols": "not a list"}),  # the wrong shape
        prices(BTCUSDT="67000.08", ETHUSDT="not a price"),  # ETH unusable: skipped
        ok({"code": -1003, "msg": "Way too many requests."}, 418, **{"Retry-After": "120"}),
        prices(BTCUSDT="67000.10", ETHUSDT="3400.10", XRPUSDT="0.5"),  # an extra: ignored
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
    assert exchange.count() == 10  # one request per interval, none while backing off
    assert producer.state.errors == 6


def test_rate_limits_and_bans_are_waited_out(
    binance: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = binance(symbols="BTC-USD")
    exchange.script(
        PRICE,
        ok({"code": -1003, "msg": "Too many requests."}, 429, **{"Retry-After": "45"}),
        ok({"code": -1003, "msg": "IP banned."}, 418, **{"Retry-After": "120"}),
        prices(BTCUSDT="1.00"),
    )
    assert asked_at(producer, exchange, clock, 166)[:3] == [0, 45, 165]
    assert log_rows(app) == [("BTC-USD", "1.00")]
    assert "HTTP 418" in (producer.state.last_error or "")


def test_an_unknown_symbol_is_found_dropped_and_the_rest_priced(
    binance: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = binance(symbols="BTC-USD,ZZZ-USD,ETH-USD")

    def answer(path: str, query: dict[str, list[str]]) -> Answer:
        if "symbols" in query:
            names = json.loads(query["symbols"][0])
            if "ZZZUSDT" in names:
                return ok(INVALID, 400)
            return prices(**{n: "2.00" for n in names})
        name = query["symbol"][0]
        return ok(INVALID, 400) if name == "ZZZUSDT" else ok({"symbol": name, "price": "1.00"})

    exchange.then = answer
    with captured() as messages:
        assert len(producer.produce()) == 2
        due(producer, clock)
        assert len(producer.produce()) == 2
    assert asked(exchange) == [
        ["BTCUSDT", "ETHUSDT", "ZZZUSDT"],
        "BTCUSDT",
        "ETHUSDT",
        "ZZZUSDT",
        ["BTCUSDT", "ETHUSDT"],
    ]
    assert log_rows(app) == [
        ("BTC-USD", "1.00"),
        ("ETH-USD", "1.00"),
        ("BTC-USD", "2.00"),
        ("ETH-USD", "2.00"),
    ]
    assert any("ZZZUSDT" in m and "Invalid symbol" in m for m in messages)
    assert producer.state.errors == 0


def test_a_symbol_missing_from_the_answer_is_logged_once(
    binance: Any, exchange: FakeExchange, clock: Clock
) -> None:
    app, producer = binance()
    exchange.script(PRICE, *[prices(BTCUSDT=f"1.0{i}") for i in range(3)])
    exchange.script(PRICE, prices(BTCUSDT="1.10", ETHUSDT="2.10"))
    with captured("ticker", logging.INFO) as messages:
        for _ in range(4):
            producer.produce()
            due(producer, clock)
    about_eth = [m for m in messages if "ETH-USD" in m]
    assert len(about_eth) == 2  # once when it went missing, once when it came back
    assert "no price for ETH-USD (ETHUSDT)" in about_eth[0]
    assert "prices again for ETH-USD" in about_eth[1]
    assert log_rows(app)[-1] == ("ETH-USD", "2.10")
    assert producer.state.errors == 0


def test_an_answer_without_any_of_our_symbols_is_an_error(binance: Any, exchange: Any) -> None:
    _app, producer = binance()
    exchange.script(PRICE, ok([]))
    assert producer.produce() == []
    assert "no price for any of BTC-USD, ETH-USD" in (producer.state.last_error or "")


def test_the_error_names_the_request_and_binances_message(binance: Any, exchange: Any) -> None:
    _app, producer = binance()
    exchange.script(PRICE, ok({"code": -1000, "msg": "An unknown error occurred."}, 500))
    producer.produce()
    error = producer.state.last_error or ""
    assert error.startswith(f"binance: GET {exchange.url}{PRICE}: HTTP 500")
    assert "An unknown error occurred. (code -1000)" in error


def test_usd_is_read_as_usdt_unless_told_otherwise() -> None:
    assert BinanceSource(["BTC-USD", "ETH-BTC", "AAPL"]).names == {
        "BTC-USD": "BTCUSDT",
        "ETH-BTC": "ETHBTC",
    }
    renamed = BinanceSource(["BTC-USD", "DOGE-EUR"], quotes={"USD": "USDC"})
    assert renamed.names == {"BTC-USD": "BTCUSDC", "DOGE-EUR": "DOGEEUR"}
    mapped = BinanceSource(["BTC-USD", "GOLD"], symbol_map={"GOLD": "PAXGUSDT"})
    assert mapped.names == {"BTC-USD": "BTCUSDT", "GOLD": "PAXGUSDT"}
    assert mapped.base_url == "https://api.binance.com"


def test_the_mapping_variables_reach_the_source(binance: Any, exchange: Any) -> None:
    app, producer = binance(
        symbols="BTC-USD,GOLD", source_quotes="USD=FDUSD", source_symbols="GOLD=paxgusdt"
    )
    exchange.script(PRICE, prices(BTCFDUSD="67000.00", PAXGUSDT="2650.00"))
    producer.produce()
    assert asked(exchange) == [["BTCFDUSD", "PAXGUSDT"]]
    assert log_rows(app) == [("BTC-USD", "67000.00"), ("GOLD", "2650.00")]


def test_no_symbol_binance_can_price_stops_start_up(make_app: Any) -> None:
    with pytest.raises(ConfigError, match="TICKER_SYMBOLS"):
        make_app(source="binance", symbols="AAPL,^GSPC")


@pytest.mark.server
def test_under_gunicorn_the_log_holds_exactly_the_good_answers(
    serve: Callable[..., Server], exchange: FakeExchange
) -> None:
    exchange.script(
        PRICE,
        prices(BTCUSDT="67000.01", ETHUSDT="3400.01"),
        ok({"code": -1000, "msg": "An unknown error occurred."}, 500),
        prices(BTCUSDT="67000.03", ETHUSDT="3400.03"),
        HANG,
        ok("<html>", 200),
        prices(BTCUSDT="67000.06"),
    )
    server = serve(
        workers=2,
        source="binance",
        source_url=exchange.url,
        symbols="BTC-USD,ETH-USD",
        tick_interval=0.2,
        source_timeout=0.5,
    )
    deadline = time.monotonic() + 30
    while exchange.count() < 7:  # past the script, the fake answers 503 forever
        assert time.monotonic() < deadline, "the producer stopped asking"
        time.sleep(0.05)
    expected = [
        ("BTC-USD", "67000.01"),
        ("ETH-USD", "3400.01"),
        ("BTC-USD", "67000.03"),
        ("ETH-USD", "3400.03"),
        ("BTC-USD", "67000.06"),
    ]
    while (got := log_rows(server.db_url)) != expected:
        assert time.monotonic() < deadline and len(got) <= len(expected), got
        time.sleep(0.05)
    assert all(len(r.query["symbols"]) == 1 for r in exchange.requests)  # one request each
