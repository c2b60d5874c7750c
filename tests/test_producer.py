"""The producer: one across gunicorn workers, failover after SIGKILL, standalone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes import SIM, assert_one_tick_per_interval, eventually, ticks_of
from tests.servers import Server, start_produce, ticker_env
from tests.sse_client import SSEStream

pytestmark = pytest.mark.server

# A source for the paused-holder test, imported by the servers as python:heldsource:Held.
HELD_SOURCE = """
import os
import time
from pathlib import Path

from ticker.sources import Source, Tick


# One BTC-USD tick an interval; while the file "hold" exists, a fetch waits.  Every
# fetch notes when it was asked in "asks-PID"; one that waits says so in "held-PID".
class Held(Source):

    def __init__(self, settings):
        self.dir = Path(os.environ["HELD_SOURCE_DIR"])
        self.n = 0

    def next_ticks(self, now_us):
        pid = os.getpid()
        with open(self.dir / f"asks-{pid}", "a") as asks:
            asks.write(f"{now_us}\\n")
        if (self.dir / "hold").exists():
            (self.dir / f"held-{pid}").write_text(str(now_us))
            while (self.dir / "hold").exists():
                time.sleep(0.01)
        self.n += 1
        return [Tick("BTC-USD", f"{100 + self.n % 50}.5", now_us)]
"""


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
    serve: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stopped process is what a holder cut off from the database looks like
    # to the others: it stops renewing.  This one is stopped inside a fetch, with
    # ticks asked for before the pause; when it wakes, the lease is gone and they
    # must not commit (the append renews the lease in its own transaction).
    (tmp_path / "heldsource.py").write_text(HELD_SOURCE)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), path])))
    monkeypatch.setenv("HELD_SOURCE_DIR", str(tmp_path))
    server = serve(workers=2, **{**SIM, "source": "python:heldsource:Held", "symbols": "BTC-USD"})
    eventually(lambda: ticks_of(server.db_url, "BTC-USD"), "first ticks", 20)
    (tmp_path / "hold").touch()
    held = eventually(lambda: list(tmp_path.glob("held-*")), "the holder waiting in a fetch", 10)
    pid = int(held[0].name.removeprefix("held-"))
    assert pid == holder_pid(server)
    stopped_at = time.time_ns() // 1000  # before the signal: any tick asked later is newer
    os.kill(pid, signal.SIGSTOP)
    try:
        head = ticks_of(server.db_url, "BTC-USD")[-1][0]
        (tmp_path / "hold").unlink()  # the fetch could return now, but its process is stopped
        eventually(
            lambda: len([i for i, _ in ticks_of(server.db_url, "BTC-USD") if i > head]) >= 3,
            "a takeover while the holder is paused",
            10,
        )
        assert holder_pid(server) != pid
    finally:
        os.kill(pid, signal.SIGCONT)
    woke_at = time.time_ns() // 1000
    dropped = f"[{pid}] ticker.producer: producer lease lost to another process; 1 fetched"
    eventually(
        lambda: dropped in server.log_text(), "the woken holder dropping what it fetched", 10
    )
    resumed_at = ticks_of(server.db_url, "BTC-USD")[-1][0]
    eventually(
        lambda: len([i for i, _ in ticks_of(server.db_url, "BTC-USD") if i > resumed_at]) >= 5,
        "five more intervals after the old holder woke",
        10,
    )
    late = [(i, ts) for i, ts in ticks_of(server.db_url, "BTC-USD") if i > head and ts < stopped_at]
    assert late == [], "ticks fetched before the pause were committed after it"
    asked = [int(t) for t in (tmp_path / f"asks-{pid}").read_text().split()]
    assert [t for t in asked if t > woke_at] == [], "the old holder went on fetching"
