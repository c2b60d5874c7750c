"""The producer: one across gunicorn workers, failover after SIGKILL, standalone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.fakes import SIM, assert_one_tick_per_interval, eventually, ticks_of
from tests.servers import Server, start_produce, ticker_env
from tests.sse_client import SSEStream

pytestmark = pytest.mark.server


def holder_pid(server: Server) -> int:
    holder = eventually(lambda: server.get("/healthz")["producer"]["holder"], "a lease holder", 10)
    return int(holder.split(":")[1])


def test_one_producer_across_workers(serve: Callable[..., Server]) -> None:
    server = serve(workers=3, **SIM)
    eventually(lambda: len(ticks_of(server.db_url, "BTC-USD")) >= 15, "15 intervals", 20)
    assert_one_tick_per_interval(server.db_url, "BTC-USD")
    assert_one_tick_per_interval(server.db_url, "AAPL")
    assert holder_pid(server) in server.worker_pids()


def test_another_worker_produces_within_seconds_after_the_holder_is_killed(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=2, **SIM)
    eventually(lambda: len(ticks_of(server.db_url, "BTC-USD")) >= 5, "first ticks", 20)
    pid = holder_pid(server)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    last_id = ticks_of(server.db_url, "BTC-USD")[-1][0]

    def resumed() -> bool:
        newer = [t for i, t in ticks_of(server.db_url, "BTC-USD") if i > last_id]
        return len(newer) >= 3

    eventually(resumed, "production after the holder died", 10)
    assert time.time() - killed_at < 10
    assert holder_pid(server) != pid
    assert_one_tick_per_interval(server.db_url, "BTC-USD")


def test_producer_off_in_the_web_tier_and_ticker_produce_standalone(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=2, producer="off", **SIM)
    with SSEStream(server.base + "/stream?symbols=AAPL") as stream:
        frames = stream.frames()
        next(frames)
        snapshot = next(frames)
        assert snapshot.json() == {"head": 0, "ticks": []}

        producer = start_produce(ticker_env(database_url=server.db_url, **SIM))
        try:
            first = next(frames)
            second = next(frames)
        finally:
            producer.send_signal(signal.SIGTERM)
            _, err = producer.communicate(timeout=15)
    assert producer.returncode == 0, err
    assert first.event == second.event == "tick"
    assert first.json()["symbol"] == "AAPL"
    assert int(second.id or 0) > int(first.id or 0)
    # The web workers never produced: every tick came from the standalone producer.
    assert server.get("/healthz")["producer"]["ticks"] == 0


def test_a_paused_holder_loses_the_lease_and_commits_nothing_when_it_wakes(
    serve: Callable[..., Server],
) -> None:
    # A stopped process is what a holder cut off from the database looks like
    # to the others: it stops renewing.  When it resumes, the lease is gone and
    # its next run must not commit a tick beside the new holder's.
    server = serve(workers=2, **SIM)
    eventually(lambda: ticks_of(server.db_url, "BTC-USD"), "first ticks", 20)
    pid = holder_pid(server)
    os.kill(pid, signal.SIGSTOP)
    try:
        last_id = ticks_of(server.db_url, "BTC-USD")[-1][0]
        eventually(
            lambda: len([i for i, _ in ticks_of(server.db_url, "BTC-USD") if i > last_id]) >= 3,
            "a takeover while the holder is paused",
            10,
        )
        assert holder_pid(server) != pid
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed_at = ticks_of(server.db_url, "BTC-USD")[-1][0]
    eventually(
        lambda: len([i for i, _ in ticks_of(server.db_url, "BTC-USD") if i > resumed_at]) >= 10,
        "ten more intervals after the old holder woke",
        10,
    )
    assert_one_tick_per_interval(server.db_url, "BTC-USD")
