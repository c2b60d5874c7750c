"""Upkeep: rollup and prune only in the lease holder, prune rolls up first, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import text

from ticker import candles, log
from ticker.candles import store
from ticker.events import Tick, now_us
from ticker.state import app_state
from ticker.upkeep import prune_all


def count(app: Flask, sql: str) -> int:
    with app_state(app).engine.connect() as conn:
        return int(conn.scalar(text(sql)) or 0)


def watermark(app: Flask) -> int:
    with app_state(app).engine.connect() as conn:
        return log.rolled_up(conn)


def test_only_the_lease_holder_rolls_up_and_prunes(make_app: Any) -> None:
    app = make_app(source="none", symbols="AAPL", retention="1")
    state = app_state(app)
    log.append(state.engine, [Tick("AAPL", "1.5", now_us(), "2")] * 5)
    producer = state.producer
    assert not producer.state.leader
    assert (producer.rollup(), producer.prune()) == (0, 0)
    assert watermark(app) == 0
    producer.produce()  # source none: it claims the lease and produces nothing
    assert producer.state.leader
    assert producer.rollup() == 5
    assert producer.health()["rolled_up"] == 5
    assert producer.prune() == 4  # TICKER_RETENTION=1: the newest event stays
    assert count(app, "SELECT sum(ticks) FROM candles WHERE width = 60") == 5


def test_the_scheduler_runs_a_rollup_job(app: Flask) -> None:
    scheduler = BackgroundScheduler()
    app_state(app).producer.schedule(scheduler)
    assert {job.id for job in scheduler.get_jobs()} == {"produce", "rollup", "prune"}


def test_prune_all_rolls_up_prunes_the_events_then_the_old_candles(make_app: Any) -> None:
    app = make_app(symbols="AAPL", retention="1", candle_retention="1s=1h")
    engine = app_state(app).engine
    old = now_us() - 7200 * 1_000_000
    log.append(engine, [Tick("AAPL", "1.5", old + i, "1") for i in range(3)])
    log.append(engine, [Tick("AAPL", "2.5", now_us(), "1")])
    assert prune_all(engine, app_state(app).settings) == 3
    assert watermark(app) == 4
    # The two-hour-old 1s candle is gone, its 1m candle is kept (30 days).
    assert count(app, "SELECT count(*) FROM candles WHERE width = 1") == 1
    assert count(app, "SELECT sum(ticks) FROM candles WHERE width = 60") == 4


def test_a_question_rolls_up_when_no_producer_has(
    app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MAX_TAIL", 10)
    engine = app_state(app).engine
    log.append(engine, [Tick("AAPL", "1.5", now_us())] * 5)
    client.get("/api/symbols")
    assert watermark(app) == 0  # a short tail is merged, not rolled up
    log.append(engine, [Tick("AAPL", "1.5", now_us())] * 10)
    assert client.get("/api/candles?symbol=AAPL").get_json()["candles"][0]["ticks"] == 15
    assert watermark(app) == 15


def test_ticker_prune_rolls_up_before_it_prunes(db_url: str, app: Flask) -> None:
    engine = app_state(app).engine
    log.append(engine, [Tick(s, "10.25", now_us(), "0.5") for s in ("AAPL", "MSFT", "AAPL")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    env.update({"TICKER_DATABASE_URL": db_url, "TICKER_RETENTION": "1"})
    done = subprocess.run(
        [sys.executable, "-m", "ticker.cli", "prune"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "pruned 2 events" in done.stdout
    with candles.reading(engine) as conn:
        rows = candles.read(conn, "AAPL", 86400, None, now_us() + 10**9, 10)
    assert [(c.ticks, str(c.volume)) for c in rows] == [(2, "1.0")]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_appends_do_not_wait_for_a_rollup_in_progress(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = app_state(app).engine
    log.append(engine, [Tick("AAPL", "1.5", now_us(), "1")] * 3)
    folding, release = threading.Event(), threading.Event()
    fold = store._fold_events

    def slow_fold(conn: Any, events: Any) -> None:  # a rollup that takes its time
        folding.set()
        release.wait(10)
        fold(conn, events)

    monkeypatch.setattr(store, "_fold_events", slow_fold)
    rolled: list[int] = []
    rollup = threading.Thread(target=lambda: rolled.append(candles.rollup(engine)))
    rollup.start()
    try:
        assert folding.wait(10)
        # The rollup's transaction is open mid-fold: an append still commits.
        appended: list[list[int]] = []
        tick = Tick("AAPL", "2.5", now_us(), "1")
        appender = threading.Thread(target=lambda: appended.append(log.append(engine, [tick])))
        appender.start()
        appender.join(5)
        assert appended == [[4]], "the append waited for the rollup"
    finally:
        release.set()
        rollup.join(10)
    # The tick committed while the rollup ran is above its watermark: counted once, next time.
    assert rolled == [3]
    assert watermark(app) == 3
    assert candles.rollup(engine) == 1
    assert count(app, "SELECT sum(ticks) FROM candles WHERE width = 60") == 4
