"""``TICKER_SOURCE=ccxt:EXCHANGE`` against the fake venues: exact prices, mapping, failures.

What ``binance`` and ``coinbase`` do interval by interval is in their own test
files; this one checks what holds for any ccxt exchange.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.fake_exchange import HANG, FakeVenue, ok, rate_limited, serving
from tests.fakes import SOURCE_TIMEOUT, Clock, captured, due, log_rows, source_apps
from tests.servers import Server, run_ticker, start_produce, ticker_env
from ticker.config import ConfigError
from ticker.producer import Producer
from ticker.sources.ccxtquotes import CCXTQuotes

BINANCE_TICKERS = "/api/v3/ticker/24hr"
EXACT = {"BTC-USD": "67012.35000000", "SHIB-USD": "0.00001234"}
Build = Callable[..., tuple[Flask, Producer]]


@pytest.fixture(params=["binance", "coinbase", "kraken"])
def venue(request: pytest.FixtureRequest) -> Iterator[FakeVenue]:
    with serving(request.param) as fake:
        yield fake


@pytest.fixture
def binance() -> Iterator[FakeVenue]:
    with serving("binance") as fake:
        yield fake


@pytest.fixture
def apps(make_app: Callable[..., Flask], clock: Clock) -> Iterator[Callable[..., Build]]:
    """Return, for a fake venue, a builder of apps whose producer polls it as ``ccxt:NAME``."""
    made: list[Iterator[Build]] = []

    def on(venue: FakeVenue) -> Build:
        builders = source_apps(make_app, venue, clock, f"ccxt:{venue.name}", "BTC-USD,SHIB-USD")
        made.append(builders)
        return next(builders)

    yield on
    for builders in made:
        next(builders, None)  # stops their apps


def set_prices(venue: FakeVenue, prices: dict[str, str]) -> None:
    """Make the venue's recorded answers quote ``prices`` (by our symbol) from now on."""
    if venue.name == "binance":
        for row in venue.payloads["ticker_24hr"]:
            ours = row["symbol"].removesuffix("USDT") + "-USD"
            row["lastPrice"] = prices.get(ours, row["lastPrice"])
    elif venue.name == "kraken":
        rows = venue.payloads["Ticker"]["result"]
        for ours, pair in {"BTC-USD": "XXBTZUSD", "SHIB-USD": "SHIBUSD"}.items():
            rows[pair]["c"][0] = prices.get(ours, rows[pair]["c"][0])
    else:
        for product in venue.payloads["products"]["products"]:
            product["price"] = prices.get(product["product_id"], product["price"])


def test_an_exchange_ccxt_does_not_know_stops_start_up_naming_ticker_source(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="TICKER_SOURCE") as caught:
        make_app(source="ccxt:nosuchexchange")
    assert caught.value.variable == "TICKER_SOURCE"
    ran = run_ticker(
        "produce", source="ccxt:nosuchexchange", database_url=f"sqlite:///{tmp_path / 't.db'}"
    )
    assert ran.returncode != 0
    assert "TICKER_SOURCE" in ran.stderr and "nosuchexchange" in ran.stderr


@pytest.mark.parametrize("price", ["0.00001234", "67012.35000000"])
def test_the_exchange_s_price_string_reaches_the_log_byte_for_byte(
    apps: Callable[..., Build], venue: FakeVenue, price: str
) -> None:
    set_prices(venue, {"BTC-USD": price})
    app, producer = apps(venue)()
    assert producer.produce()
    assert log_rows(app)[0] == ("BTC-USD", price)
    body = app.test_client().get("/api/ticks?symbol=BTC-USD").get_data(as_text=True)
    assert f'"price":"{price}"' in body.replace(" ", "")
    assert "size" not in json.loads(body)["ticks"][0]  # a quote is no trade: no size


def test_the_unified_last_in_string_mode_is_exact_too(binance: FakeVenue) -> None:
    """The fallback for an exchange without a field in PRICE_FIELDS."""
    source = CCXTQuotes("binance", list(EXACT), base_url=binance.url, timeout=0.5)
    source.price_field = None
    set_prices(binance, EXACT)
    assert {t.symbol: t.price for t in source.next_ticks(1)} == EXACT
    row = dict(binance.payloads["ticker_24hr"][0], lastPrice="@")  # BTCUSDT
    binance.always(BINANCE_TICKERS, ok(json.dumps([row]).replace('"@"', "0.00001234000")))
    assert [t.price for t in source.next_ticks(2)] == ["0.00001234000"]  # a JSON number
    source.close()


def test_no_request_before_the_first_fetch_and_every_request_to_the_url(
    apps: Callable[..., Build], venue: FakeVenue
) -> None:
    _app, producer = apps(venue)()
    assert venue.count() == 0  # start-up asks nothing: markets load in the first interval
    assert producer.produce()
    assert venue.count() >= 2
    source = producer.source
    assert isinstance(source, CCXTQuotes)
    assert all(url.startswith(venue.url) for url in urls(source.exchange.urls["api"]))


def test_without_a_url_the_exchange_s_own_hosts_are_asked() -> None:
    source = CCXTQuotes("binance", ["BTC-USD"])
    assert "https://api.binance.com/api/v3" in urls(source.exchange.urls["api"])
    source.close()


def urls(tree: Any) -> list[str]:
    """Return every URL in ccxt's nested ``urls["api"]``."""
    if isinstance(tree, dict):
        return [url for value in tree.values() for url in urls(value)]
    return [tree] if isinstance(tree, str) else []


def test_no_listed_symbol_is_a_clear_error_and_the_markets_load_again(
    apps: Callable[..., Build], venue: FakeVenue, clock: Clock
) -> None:
    _app, producer = apps(venue)(symbols="ZZZ-USD,QQQ-EUR")
    markets_before = venue.count()
    assert producer.produce() == []
    first = venue.count() - markets_before
    assert "lists none of ZZZ-USD, QQQ-EUR" in (producer.state.last_error or "")
    assert "TICKER_SOURCE_SYMBOLS" in (producer.state.last_error or "")
    due(producer, clock)
    assert producer.produce() == []
    assert venue.count() == 2 * first  # loaded again, asked for no price
    assert producer.state.errors == 2


def test_a_timeout_names_the_exchange_and_the_wait(
    apps: Callable[..., Build], binance: FakeVenue
) -> None:
    _app, producer = apps(binance)()
    binance.script(BINANCE_TICKERS, HANG)
    assert producer.produce() == []
    error = producer.state.last_error or ""
    assert error.startswith(f"ccxt:binance: GET {binance.url}{BINANCE_TICKERS}")
    assert f"no answer within {SOURCE_TIMEOUT:g}s" in error


def test_the_health_notes_each_good_answer_not_a_failure(binance: FakeVenue) -> None:
    source = CCXTQuotes("binance", ["BTC-USD"], base_url=binance.url, timeout=0.5)
    assert source.health.last_message_at is None
    source.next_ticks(1)
    seen = source.health.last_message_at
    assert seen is not None and source.health.trades == 1
    binance.script(BINANCE_TICKERS, rate_limited("binance"))
    with pytest.raises(Exception, match="rate limited"):
        source.next_ticks(2)
    assert (source.health.last_message_at, source.health.trades) == (seen, 1)
    source.close()


def test_without_fetch_tickers_each_symbol_is_asked_and_a_failure_keeps_the_rest(
    apps: Callable[..., Build], binance: FakeVenue, clock: Clock
) -> None:
    app, producer = apps(binance)(symbols="BTC-USD,ETH-USD,SHIB-USD")
    source = producer.source
    assert isinstance(source, CCXTQuotes)
    source.batched = False  # as for an exchange that has no fetchTickers
    assert len(producer.produce()) == 3
    asked = [r.query["symbol"][0] for r in binance.requests if r.path == BINANCE_TICKERS]
    assert asked == ["BTCUSDT", "ETHUSDT", "SHIBUSDT"]
    # ETH delisted (Binance answers -1121) is dropped for good; BTC rate limited fails the
    # interval, but the price that came (SHIB) is kept and the Retry-After honoured.
    info = binance.payloads["exchangeInfo"]
    binance.payloads["ticker_24hr"] = [
        r for r in binance.payloads["ticker_24hr"] if r["symbol"] != "ETHUSDT"
    ]
    info["symbols"] = [m for m in info["symbols"] if m["symbol"] != "ETHUSDT"]
    binance.script(BINANCE_TICKERS, rate_limited("binance", "30"))  # BTC is asked first
    due(producer, clock)
    with captured() as messages:
        assert len(producer.produce()) == 1
    assert [s for s, _ in log_rows(app)[3:]] == ["SHIB-USD"]
    assert producer.state.errors == 1
    assert 29 <= producer.state.retry_at - clock.now <= 30
    assert any("no longer asking for ETH/USDT" in m for m in messages), messages
    clock.now += 30
    assert len(producer.produce()) == 2


@pytest.mark.server
def test_under_gunicorn_ccxt_binance_ticks_reach_the_api(
    serve: Callable[..., Server], binance: FakeVenue
) -> None:
    set_prices(binance, EXACT)
    server = serve(
        workers=2,
        source="ccxt:binance",
        source_url=binance.url,
        symbols="BTC-USD,SHIB-USD",
        tick_interval=0.2,
        source_timeout=0.5,
    )
    deadline = time.monotonic() + 30
    while True:
        got = {
            s: [t["price"] for t in server.get(f"/api/ticks?symbol={s}")["ticks"]] for s in EXACT
        }
        if all(len(prices) >= 2 for prices in got.values()):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
    assert {s: set(prices) for s, prices in got.items()} == {s: {p} for s, p in EXACT.items()}
    assert binance.count("/api/v3/exchangeInfo") == 1
    health = server.get("/healthz")["producer"]
    assert health["source"] == "ccxt:binance"


def test_a_paused_source_lets_go_and_fetches_again(binance: FakeVenue) -> None:
    source = CCXTQuotes("binance", ["BTC-USD"], base_url=binance.url, timeout=0.5)
    assert source.next_ticks(1)
    source.pause()  # this process lost the lease: nothing held open
    assert [t.price for t in source.next_ticks(2)] == ["67012.35000000"]
    source.close()


@pytest.mark.server
def test_ticker_produce_polls_ccxt_coinbase_into_the_log(db_url: str, tmp_path: Path) -> None:
    with serving("coinbase") as coinbase:
        config = {
            "database_url": db_url,
            "source": "ccxt:coinbase",
            "source_url": coinbase.url,
            "symbols": "BTC-USD,SHIB-USD",
            "tick_interval": 0.2,
        }
        assert run_ticker("db", "upgrade", **config).returncode == 0
        producer = start_produce(ticker_env(**config))
        try:
            deadline = time.monotonic() + 30
            while len(rows := log_rows(db_url)) < 4:
                assert producer.poll() is None, producer.communicate()[1]
                assert time.monotonic() < deadline, rows
                time.sleep(0.1)
        finally:
            producer.terminate()
            try:
                producer.wait(15)
            except subprocess.TimeoutExpired:
                producer.kill()
                producer.wait()
    assert set(rows) == {("BTC-USD", "67012.35"), ("SHIB-USD", "0.00001234")}
