"""``ccxt:EXCHANGE:trades`` through ccxt.pro against the fake venues of ``fake_ws``.

Each test drives its producers by hand (``produce()`` in a loop until the log
holds what the venue published), on SQLite and PostgreSQL.  The log must hold
exactly the good trades, each once, with the venue's strings and trade time.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from tests.fake_exchange import rate_limited
from tests.fake_ws import Binance, Coinbase, FakeVenue, VenueTrade
from tests.fakes import captured, eventually
from tests.servers import Server, parse_metrics, run_ticker, start_produce, ticker_env
from ticker.producer import Producer
from ticker.sources import ccxttrades
from ticker.sources.ccxttrades import CCXTTradesSource
from ticker.sources.exchange import make_exchange
from ticker.state import app_state

BTC = {"binance": "BTCUSDT", "coinbase": "BTC-USD"}
ETH = {"binance": "ETHUSDT", "coinbase": "ETH-USD"}
OURS = {"BTCUSDT": "BTC-USD", "ETHUSDT": "ETH-USD", "BTC-USD": "BTC-USD", "ETH-USD": "ETH-USD"}

Row = tuple[str, str, str | None, int]
APPS: dict[int, Flask] = {}


@pytest.fixture(params=["binance", "coinbase"])
def venue(request: pytest.FixtureRequest) -> Iterator[FakeVenue]:
    fake = FakeVenue(Binance() if request.param == "binance" else Coinbase())
    yield fake
    fake.close()


@pytest.fixture
def binance() -> Iterator[FakeVenue]:
    fake = FakeVenue(Binance())
    yield fake
    fake.close()


@pytest.fixture
def producers(make_app: Callable[..., Flask]) -> Callable[..., Producer]:
    """Build producers streaming from a venue, each in an app of its own (``APPS[producer]``)."""

    def build(venue: FakeVenue, **config: Any) -> Producer:
        settings = {
            "source": f"ccxt:{venue.dialect.name}:trades",
            "source_url": venue.url,
            "symbols": "BTC-USD,ETH-USD",
            "tick_interval": 0.1,
            "source_silence": 5,
            "source_backoff": 0.2,
            **config,
        }
        app = make_app(**settings)
        producer: Producer = app_state(app).producer
        APPS[id(producer)] = app
        return producer

    return build


def trade(venue: FakeVenue, n: int, market: dict[str, str] = BTC, price: str = "") -> VenueTrade:
    """Trade ``n`` of the venue, with prices that a float would not keep."""
    return VenueTrade(
        market[venue.dialect.name], n, price or f"67012.{n:02d}000000", f"0.0000{n}234"
    )


def expected(trades: list[VenueTrade]) -> list[Row]:
    return [(OURS[t.market], t.price, t.size, t.ts_us) for t in trades]


def rows(where: Producer | str) -> list[Row]:
    """Return every row of the log of a producer's database (or a database URL), by id."""
    url = where if isinstance(where, str) else where.settings.database_url
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT symbol, price, size, ts FROM ticks ORDER BY id"))
            return [(str(r[0]), str(r[1]), r[2], int(r[3])) for r in found]
    finally:
        engine.dispose()


def by_symbol(found: list[Row]) -> dict[str, list[Row]]:
    """Group rows by symbol, in log order: the order across symbols is not the venue's promise."""
    grouped: dict[str, list[Row]] = {}
    for row in found:
        grouped.setdefault(row[0], []).append(row)
    return grouped


def pump(producer: Producer, want: list[Row], what: str = "the log") -> None:
    """Run the producer until the log holds ``want`` (or more: then the check fails)."""

    def done() -> bool:
        producer.produce()
        return len(rows(producer)) >= len(want)

    eventually(done, f"{what}: {len(want)} trades")
    producer.produce()
    assert by_symbol(rows(producer)) == by_symbol(want)


def connected(producer: Producer, venue: FakeVenue, subscribers: int = 1) -> None:
    def check() -> bool:
        producer.produce()
        return venue.subscribers() == subscribers and bool(source(producer).health.connected)

    eventually(check, "the producer subscribed to the venue")


def source(producer: Producer) -> CCXTTradesSource:
    assert isinstance(producer.source, CCXTTradesSource)
    return producer.source


def test_a_good_stream_is_logged_exactly(
    producers: Callable[..., Producer], venue: FakeVenue
) -> None:
    producer = producers(venue)
    connected(producer, venue)
    published = [trade(venue, 1, price="0.00001234"), trade(venue, 1, ETH), trade(venue, 2)]
    venue.publish(*published)
    pump(producer, expected(published))
    health = source(producer).health
    assert health.trades == 3 and health.duplicates == 0 and health.gaps == 0


def test_a_dropped_connection_reconnects_and_nothing_is_lost_or_twice(
    producers: Callable[..., Producer], venue: FakeVenue
) -> None:
    producer = producers(venue)
    connected(producer, venue)
    first = [trade(venue, 1), trade(venue, 2)]
    venue.publish(*first)
    pump(producer, expected(first))
    venue.drop()
    eventually(lambda: venue.subscribers() == 0, "the connection dropped")
    missed = [trade(venue, 3), trade(venue, 4)]  # the venue has them; nobody was listening
    venue.publish(*missed)
    connected(producer, venue)
    after = [trade(venue, 5)]
    venue.publish(*after)
    pump(producer, expected(first + missed + after))
    assert source(producer).health.reconnects >= 1


def test_a_gap_is_counted_and_filled_over_rest(
    producers: Callable[..., Producer], binance: FakeVenue
) -> None:
    producer = producers(binance)
    connected(producer, binance)
    binance.publish(trade(binance, 1))
    binance.withhold(trade(binance, 2), trade(binance, 3))  # lost on the wire
    binance.publish(trade(binance, 4))
    pump(producer, expected([trade(binance, n) for n in (1, 2, 3, 4)]))
    assert source(producer).health.gaps == 1
    assert "/api/v3/trades" in binance.requests


def test_a_silent_connection_is_reconnected(
    producers: Callable[..., Producer], venue: FakeVenue
) -> None:
    venue.silent = True
    producer = producers(venue, source_silence=0.5)
    eventually(lambda: (producer.produce(), venue.opened >= 2)[1], "a second connection")
    assert source(producer).health.reconnects >= 1
    venue.silent = False
    connected(producer, venue)
    venue.publish(trade(venue, 1))
    pump(producer, expected([trade(venue, 1)]))


def test_malformed_frames_are_counted_and_skipped(
    producers: Callable[..., Producer], venue: FakeVenue
) -> None:
    producer = producers(venue)
    connected(producer, venue)
    venue.publish(trade(venue, 1))
    venue.send_raw('{"e": "trade", this is not JSON')
    bad = [  # a price as a JSON number (a float would round it), a trade without a size
        trade(venue, 2, price="NUMBER"),
        VenueTrade(BTC[venue.dialect.name], 3, "67012.30000000", "NOSIZE"),
    ]
    for each in bad:
        frame = venue.dialect.frames(each)
        frame = frame.replace('"NUMBER"', "67012.02").replace(', "q": "NOSIZE"', "")
        venue.send_raw(frame.replace('"size": "NOSIZE", ', ""))
    venue.publish(trade(venue, 4))
    pump(producer, expected([trade(venue, 1), trade(venue, 4)]))
    assert source(producer).health.malformed == 3


def test_the_lease_moves_while_streaming_and_no_trade_is_written_twice(
    producers: Callable[..., Producer], venue: FakeVenue
) -> None:
    old = producers(venue, lease_ttl=1.5)
    new = producers(venue, lease_ttl=1.5)
    connected(old, venue)
    first = [trade(venue, 1), trade(venue, 2)]
    venue.publish(*first)
    pump(old, expected(first))
    # The old holder stalls (no renewal) while its connection still receives:
    # what it buffers now is never committed by it.
    held = [trade(venue, 3), trade(venue, 4)]
    venue.publish(*held)
    eventually(lambda: source(old).health.trades == 4, "the old holder received 3 and 4")
    eventually(lambda: (new.produce(), new.state.leader)[1], "the new holder took over", 10)
    eventually(lambda: (new.produce(), venue.subscribers() == 2)[1], "the new one subscribed")
    new.produce()
    old.produce()  # wakes: its append finds the lease taken, its connection closes
    assert not old.state.leader
    assert not source(old).health.connected
    eventually(lambda: venue.subscribers() == 1, "the old holder's connection closed")
    later = [trade(venue, 5)]
    venue.publish(*later)
    pump(new, expected(first + held + later), "the new holder")


def test_healthz_and_metrics_show_the_upstream(
    producers: Callable[..., Producer], binance: FakeVenue
) -> None:
    producer = producers(binance)
    connected(producer, binance)
    binance.publish(trade(binance, 1))
    binance.withhold(trade(binance, 2))
    binance.publish(trade(binance, 3))
    pump(producer, expected([trade(binance, n) for n in (1, 2, 3)]))
    client = APPS[id(producer)].test_client()
    upstream = client.get("/healthz").get_json()["producer"]["upstream"]
    assert upstream["connected"] is True
    assert 0 <= upstream["last_message_age_s"] < 10
    assert upstream["trades"] == 3 and upstream["gaps"] == 1 and upstream["reconnects"] == 0
    assert upstream["trades_per_s"] > 0
    got = parse_metrics(client.get("/metrics").get_data(as_text=True))
    assert got["ticker_source_connected"] == 1
    assert 0 <= got["ticker_source_last_message_age_seconds"] < 10
    assert got["ticker_source_trades_total"] == 3
    assert got["ticker_source_gaps_total"] == 1
    assert got["ticker_source_reconnects_total"] == 0
    assert got["ticker_source_trades_per_second"] > 0
    producer.release()  # the lease handed on: the connection closes
    eventually(lambda: binance.subscribers() == 0, "the connection closed")
    got = parse_metrics(client.get("/metrics").get_data(as_text=True))
    assert got["ticker_source_connected"] == 0


def test_a_rate_limited_market_load_waits_its_retry_after(
    producers: Callable[..., Producer], binance: FakeVenue
) -> None:
    binance.rest.script("/api/v3/exchangeInfo", rate_limited("binance", retry_after="1"))
    with captured("ticker.sources.feed", logging.INFO) as lines:
        producer = producers(binance)
        connected(producer, binance)
    waits = [float(m.split()[-1].rstrip("s")) for m in lines if "reconnecting in" in m]
    assert waits and waits[0] >= 1.0, lines
    assert any("RateLimitExceeded" in m or "DDoSProtection" in m for m in lines), lines
    binance.publish(trade(binance, 1))
    pump(producer, expected([trade(binance, 1)]))


def test_a_banned_gap_fill_is_logged_and_the_stream_goes_on(
    producers: Callable[..., Producer], binance: FakeVenue
) -> None:
    producer = producers(binance)
    connected(producer, binance)
    binance.publish(trade(binance, 1))
    pump(producer, expected([trade(binance, 1)]))
    binance.rest.script("/api/v3/trades", rate_limited("binance", retry_after="60", status=418))
    binance.withhold(trade(binance, 2))
    with captured("ticker.sources.feed") as lines:
        binance.publish(trade(binance, 3))
        pump(producer, expected([trade(binance, 1), trade(binance, 3)]))
    assert source(producer).health.gaps == 1
    assert any("could not fill" in m for m in lines), lines
    binance.publish(trade(binance, 4))
    pump(producer, expected([trade(binance, n) for n in (1, 3, 4)]))


def test_without_watch_trades_for_symbols_each_symbol_is_watched(
    producers: Callable[..., Producer], binance: FakeVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def single_symbol(*args: Any, **kwargs: Any) -> Any:
        exchange = make_exchange(*args, **kwargs)
        exchange.has = {**exchange.has, "watchTradesForSymbols": False}
        return exchange

    monkeypatch.setattr(ccxttrades, "make_exchange", single_symbol)
    producer = producers(binance)
    eventually(lambda: (producer.produce(), len(binance.subscribed) >= 2)[1], "two subscriptions")
    assert sorted(binance.subscribed) == [["BTCUSDT"], ["ETHUSDT"]]
    published = [trade(binance, 1), trade(binance, 1, ETH), trade(binance, 2)]
    binance.publish(*published)
    pump(producer, expected(published))


# ---- real processes: gunicorn's gevent workers, `ticker produce` ----

STREAMING = {
    "source": "ccxt:binance:trades",
    "symbols": "BTC-USD,ETH-USD",
    "tick_interval": 0.2,
    "source_silence": 5,
    "source_backoff": 0.2,
    "lease_ttl": 2,
}


def logged(db_url: str, want: list[Row], what: str) -> None:
    """Wait until the log holds ``want``; then it must hold exactly that."""
    eventually(lambda: len(rows(db_url)) >= len(want), f"{what}: {len(want)} trades", 30)
    assert by_symbol(rows(db_url)) == by_symbol(want)


@pytest.mark.server
def test_a_gevent_worker_streams_trades_from_one_connection(
    serve: Callable[..., Server], binance: FakeVenue, db_url: str
) -> None:
    server = serve(workers=2, producer="auto", source_url=binance.url, **STREAMING)
    eventually(lambda: binance.subscribers() == 1, "one worker subscribed", 30)
    published = [trade(binance, n) for n in (1, 2, 3)] + [trade(binance, 1, ETH)]
    binance.publish(*published)
    logged(db_url, expected(published), "the log")
    assert binance.opened == 1  # the other worker never connected
    metrics = server.metrics()
    assert metrics["ticker_source_connected"] == 1
    assert metrics["ticker_source_trades_total"] == 4
    assert 0 <= metrics["ticker_source_last_message_age_seconds"] < 30


@pytest.mark.server
def test_ticker_produce_hands_the_stream_over_without_a_trade_twice(
    binance: FakeVenue, db_url: str
) -> None:
    upgraded = run_ticker("db", "upgrade", database_url=db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    env = ticker_env(database_url=db_url, source_url=binance.url, **STREAMING)
    first = start_produce(env)
    try:
        eventually(lambda: binance.subscribers() == 1, "the first producer subscribed", 30)
        before = [trade(binance, n) for n in (1, 2)]
        binance.publish(*before)
        logged(db_url, expected(before), "the first producer")
    finally:
        first.send_signal(signal.SIGTERM)  # releases the lease: its connection closes first
        _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert binance.subscribers() == 0
    meanwhile = [trade(binance, 3), trade(binance, 4)]  # nobody listens; the venue has them
    binance.publish(*meanwhile)
    second = start_produce(env)
    try:
        eventually(lambda: binance.subscribers() == 1, "the second producer subscribed", 30)
        after = [trade(binance, 5)]
        binance.publish(*after)
        logged(db_url, expected(before + meanwhile + after), "the second producer")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err


@pytest.mark.server
def test_a_paused_gevent_holder_hands_the_stream_over_without_a_trade_twice(
    serve: Callable[..., Server], binance: FakeVenue, db_url: str
) -> None:
    # A stopped worker is a holder cut off: it stops renewing, its socket stays open.
    server = serve(workers=2, producer="auto", source_url=binance.url, **STREAMING)
    eventually(lambda: binance.subscribers() == 1, "one worker subscribed", 30)
    before = [trade(binance, 1), trade(binance, 2)]
    binance.publish(*before)
    logged(db_url, expected(before), "the first holder")
    holder = eventually(lambda: server.get("/healthz")["producer"]["holder"], "a holder", 10)
    pid = int(holder.split(":")[1])
    os.kill(pid, signal.SIGSTOP)
    try:
        assert binance.subscribers() == 1  # the lease has not lapsed yet
        missed = [trade(binance, 3)]  # only the stopped holder's socket gets it
        binance.publish(*missed)
        eventually(lambda: binance.subscribers() == 2, "the other worker subscribed", 20)
        during = [trade(binance, 4)]  # both sockets get it; the new holder fills 3 first
        binance.publish(*during)
        during = missed + during
        logged(db_url, expected(before + during), "the new holder")
    finally:
        os.kill(pid, signal.SIGCONT)
    # Woken, the old holder finds the lease taken: its trades are dropped, its socket closed.
    eventually(lambda: binance.subscribers() == 1, "the old holder's connection closed", 20)
    after = [trade(binance, 5)]
    binance.publish(*after)
    logged(db_url, expected(before + during + after), "after the old holder woke")
    assert "producer lease lost to another process" in server.log_text()
