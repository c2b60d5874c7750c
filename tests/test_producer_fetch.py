"""The producer around its source: fetch outside the write lock, lease kept, takeover, failures."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text, update

from tests.fakes import Clock, captured, log_rows, stop
from ticker import lease, log
from ticker.db import WRITE_LOCK, writing
from ticker.events import Event, Tick
from ticker.producer import Producer
from ticker.sources import Source, SourceError
from ticker.state import app_state


def write_lock_is_free(db_url: str) -> bool:
    """Say whether another connection could start writing the log right now, without waiting."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            taken = bool(conn.scalar(select(func.pg_try_advisory_lock(WRITE_LOCK))))
            if taken:
                conn.scalar(select(func.pg_advisory_unlock(WRITE_LOCK)))
            return taken
    finally:
        engine.dispose()


class Probe(Source):
    """A source that runs a check whenever it is called, then gives fixed prices."""

    def __init__(self, check: Callable[[], None] = lambda: None, price: str = "1.00") -> None:
        self.check = check
        self.price = price
        self.calls = 0
        self.resumed: list[list[Event]] = []

    def next_ticks(self, now_us: int) -> list[Tick]:
        self.calls += 1
        self.check()
        return [Tick("BTC-USD", self.price, now_us)]

    def resume(self, latest: Sequence[Event]) -> None:
        self.check()
        self.resumed.append(list(latest))


@pytest.fixture
def producer_of(
    make_app: Callable[..., Flask],
) -> Iterator[Callable[..., tuple[Flask, Producer]]]:
    apps: list[Flask] = []

    def build(probe: Source | None = None, **config: Any) -> tuple[Flask, Producer]:
        app = make_app(**{"symbols": "BTC-USD,ETH-USD", **config})
        apps.append(app)
        producer: Producer = app_state(app).producer
        if probe is not None:
            producer.source = probe
        producer.clock = Clock()
        return app, producer

    yield build
    for app in apps:
        stop(app)


def steal_lease(app: Flask, holder: str = "other:1:x", expires_at: int | None = None) -> None:
    """Hand the lease to another holder, as a process that took over would."""
    with writing(app_state(app).engine) as conn:
        until = expires_at if expires_at is not None else lease.clock_us(conn) + 60_000_000
        conn.execute(
            update(lease.LeaseRow)
            .where(lease.LeaseRow.name == lease.PRODUCER)
            .values(holder=holder, expires_at=until)
        )


def test_the_source_never_runs_while_the_log_is_locked_for_writing(
    producer_of: Any, db_url: str
) -> None:
    seen: list[bool] = []
    probe = Probe(lambda: seen.append(write_lock_is_free(db_url)))
    app, producer = producer_of(probe)
    for _ in range(3):
        assert len(producer.produce()) == 1
    assert probe.calls == 3 and len(probe.resumed) == 1  # resumed once, on the takeover
    assert seen == [True] * 4
    assert log_rows(app) == [("BTC-USD", "1.00")] * 3


def test_a_takeover_continues_the_sim_from_the_logs_latest_price(producer_of: Any) -> None:
    app, producer = producer_of(source="sim", seed=3, symbols="BTC-USD")
    log.append(app_state(app).engine, [Tick("BTC-USD", "134000.00", 1)])  # the previous producer's
    producer.produce()
    price = Decimal(log_rows(app)[-1][1])
    assert Decimal("120000") < price < Decimal("148000")  # not the profile's 67000


def test_ticks_fetched_while_the_lease_was_taken_are_dropped(producer_of: Any) -> None:
    probe = Probe()
    app, producer = producer_of(probe)
    producer.produce()
    probe.check = lambda: steal_lease(app)  # another process takes over during the fetch
    assert producer.produce() == []
    assert not producer.state.leader
    assert log_rows(app) == [("BTC-USD", "1.00")]
    probe.check = lambda: None
    assert producer.produce() == []  # it stays out while the other holds the lease
    assert probe.calls == 2  # and does not even ask its source


def test_a_lease_held_by_another_meanwhile_drops_the_fetch_and_resumes_from_the_log(
    producer_of: Any,
) -> None:
    probe = Probe(price="2.00")
    app, producer = producer_of(probe)
    producer.produce()

    def other_produced_and_lapsed() -> None:
        probe.check = lambda: None  # once, during this fetch
        steal_lease(app, expires_at=0)
        log.append(app_state(app).engine, [Tick("BTC-USD", "3.00", 5)])

    probe.check = other_produced_and_lapsed
    assert producer.produce() == []
    assert producer.state.leader
    assert [e.price for e in probe.resumed[-1]] == ["3.00"]
    assert len(producer.produce()) == 1
    assert log_rows(app) == [("BTC-USD", "2.00"), ("BTC-USD", "3.00"), ("BTC-USD", "2.00")]


def test_a_source_that_raises_never_stops_the_producer(producer_of: Any) -> None:
    def broken() -> None:
        raise KeyError("a bug in the source")

    probe = Probe(broken)
    _app, producer = producer_of(probe)
    with captured() as messages:
        assert producer.produce() == []  # the takeover's resume raised
        producer.clock.now += 1  # type: ignore[attr-defined]
        assert producer.produce() == []  # and now the fetch
    assert producer.state.errors == 2
    assert producer.state.leader
    assert "KeyError" in (producer.state.last_error or "")
    assert any("KeyError" in m for m in messages)
    probe.check = lambda: None
    producer.clock.now += 10  # type: ignore[attr-defined]
    assert len(producer.produce()) == 1
    assert producer.state.consecutive_errors == 0


def test_the_lease_is_renewed_while_the_source_backs_off(producer_of: Any) -> None:
    def limited() -> None:
        raise SourceError("rate limited", retry_after=600)

    probe = Probe(limited)
    app, producer = producer_of(probe)
    producer.produce()
    with app_state(app).engine.connect() as conn:
        first = lease.current(conn)
    producer.clock.now += 5  # type: ignore[attr-defined]
    producer.produce()
    with app_state(app).engine.connect() as conn:
        second = lease.current(conn)
    assert first is not None and second is not None
    assert second[0] == producer.state.holder and second[1] > first[1]
    assert probe.calls == 1  # backing off: the source was not asked again


def test_ticks_the_log_would_refuse_are_dropped_and_logged(producer_of: Any) -> None:
    class Sloppy(Source):
        def next_ticks(self, now_us: int) -> list[Tick]:
            return [
                Tick("BTC-USD", "67012.35", now_us),
                Tick("XRP-USD", "0.5", now_us),  # not tracked
                Tick("ETH-USD", "1e3", now_us),  # not a plain decimal
                Tick("ETH-USD", "-1", now_us),
            ]

    app, producer = producer_of(Sloppy())
    with captured() as messages:
        assert len(producer.produce()) == 1
    assert log_rows(app) == [("BTC-USD", "67012.35")]
    assert len([m for m in messages if "refuses" in m]) == 3


def test_the_lease_outlasts_a_fetch_that_takes_the_whole_timeout(producer_of: Any) -> None:
    _app, producer = producer_of(source="binance", source_timeout=4, tick_interval=1, lease_ttl=5)
    assert producer.lease_ttl >= 1 + 2 * 4


def test_the_none_source_still_holds_the_lease(producer_of: Any, db_url: str) -> None:
    _app, producer = producer_of(source="none")
    assert producer.produce() == []
    assert producer.state.leader
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM ticks")) == 0
    engine.dispose()
