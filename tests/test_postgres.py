"""PostgreSQL: two gunicorn instances on one log, failover across them, a database restart."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes import (
    QUIET,
    SIM,
    SYMBOLS,
    assert_one_tick_per_interval,
    eventually,
    log_ids,
    ticks_of,
)
from tests.servers import Server
from tests.sse_client import SSEStream

pytestmark = [
    pytest.mark.server,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]

SERVED = {**QUIET, "heartbeat": 0.5}


class Follower(threading.Thread):
    """Follow a stream like a browser: on any drop, reconnect with the last id seen."""

    def __init__(self, server: Server, after: int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.last_id = str(after)
        self.ids: list[int] = []
        self.target: int | None = None
        self.reconnects = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                url = self.server.base + "/stream"
                with SSEStream(url, {"Last-Event-ID": self.last_id}, timeout=5) as stream:
                    for frame in stream.frames():
                        if frame.event == "tick":
                            self.ids.append(int(frame.id or 0))
                        if frame.id is not None:
                            self.last_id = frame.id
                        if self.target is not None and int(self.last_id) >= self.target:
                            self.done.set()
                            return
            except OSError:
                pass
            self.reconnects += 1
            time.sleep(0.2)

    def finish(self, target: int, timeout: float = 30) -> list[int]:
        self.target = target
        self.join(timeout)
        assert self.done.is_set(), f"follower stuck at {self.last_id}, wanted {target}"
        return self.ids


def post_with_retry(server: Server, batch: list[dict[str, str]]) -> list[int]:
    """Post like a well-behaved producer: retry while the database is away (503)."""
    for _ in range(100):
        try:
            return server.post_ticks(batch)
        except urllib.error.HTTPError as exc:
            assert exc.code == 503, exc.read()
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the service never came back")


def test_two_instances_deliver_every_tick_in_commit_order(serve: Callable[..., Server]) -> None:
    first, second = serve(**SERVED), serve(**SERVED)
    followers = [Follower(first, 0), Follower(second, 0)]
    for follower in followers:
        follower.start()
    stop = threading.Event()
    posted: list[int] = []
    errors: list[BaseException] = []

    def post(n: int) -> None:
        server = (first, second)[n % 2]
        try:
            for i in itertools.count():
                if stop.is_set():
                    return
                batch = [
                    {"symbol": SYMBOLS[(n + i + k) % 3], "price": f"{n + 1}.{i}"} for k in range(3)
                ]
                posted.extend(server.post_ticks(batch))
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for writer in writers:
        writer.start()
    eventually(lambda: len(posted) > 600 or errors, "writes through both instances", 30)
    stop.set()
    for writer in writers:
        writer.join(30)
    assert not errors, errors[0]

    table = log_ids(first.db_url)
    assert sorted(posted) == table
    assert len(table) > 300
    for follower in followers:
        received = follower.finish(table[-1])
        assert received == table  # all of them, strictly increasing, none twice


def test_the_other_instance_produces_after_the_producing_one_is_killed(
    serve: Callable[..., Server],
) -> None:
    instances = [serve(**SIM), serve(**SIM)]
    holder = eventually(
        lambda: instances[0].get("/healthz")["producer"]["holder"], "a lease holder", 10
    )
    pid = int(holder.split(":")[1])
    producing = next(s for s in instances if pid in s.worker_pids())
    other = next(s for s in instances if s is not producing)
    for victim in [*producing.worker_pids(), producing.proc.pid]:
        os.kill(victim, signal.SIGKILL)
    producing.proc.wait(10)
    last_id = ticks_of(other.db_url, "BTC-USD")[-1][0]
    killed_at = time.monotonic()

    eventually(
        lambda: len([i for i, _ in ticks_of(other.db_url, "BTC-USD") if i > last_id]) >= 3,
        "production by the surviving instance",
        10,
    )
    assert time.monotonic() - killed_at < 10
    new_pid = int(other.get("/healthz")["producer"]["holder"].split(":")[1])
    assert new_pid in other.worker_pids()
    assert_one_tick_per_interval(other.db_url, "BTC-USD")


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.skipif(not Path("/etc/postgresql").is_dir(), reason="no local PostgreSQL cluster")
def test_clients_end_with_every_tick_across_a_database_restart(
    serve: Callable[..., Server],
) -> None:
    server = serve(**SERVED)
    start = server.post_ticks([{"symbol": "AAPL", "price": "1"}])[0]
    followers = [Follower(server, start), Follower(server, start)]
    for follower in followers:
        follower.start()
    posted: list[int] = []
    for i in range(20):
        posted += post_with_retry(server, [{"symbol": SYMBOLS[i % 3], "price": f"{i}.5"}])
    restart_postgres()
    for i in range(20, 60):
        posted += post_with_retry(server, [{"symbol": SYMBOLS[i % 3], "price": f"{i}.5"}])

    table = log_ids(server.db_url, after=start)
    assert table == posted
    for follower in followers:
        assert follower.finish(table[-1]) == table
    assert server.get("/healthz")["status"] == "ok"
