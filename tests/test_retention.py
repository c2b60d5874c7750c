"""Retention over real gunicorn: pruned by age and by count, ids stay monotonic, resets.

The prune job runs in the producer (``TICKER_PRODUCER=auto`` elects one even
with ``TICKER_SOURCE=none``); these tests shorten its interval and then watch
the log and the streams, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tests.fakes import QUIET, SYMBOLS, eventually, expired_on_resume, log_ids, tick_ids
from tests.servers import Server, run_ticker
from tests.sse_client import Message, SSEStream
from ticker import ROOT, create_app, log
from ticker.cli import upgrade
from ticker.config import Retention
from ticker.db import make_engine
from ticker.events import Tick, format_ts, now_us

PRUNING = {**QUIET, "prune_interval": 0.2}
SYMBOLS_ASKED = "BTC-USD,AAPL"  # what the resuming streams ask for
HOUR_AGO = format_ts(now_us() - 3600 * 1_000_000)


def wait_pruned_through(server: Server, target: int, timeout: float = 15) -> dict[str, Any]:
    """Poll /healthz until retention has deleted through ``target``."""
    end = time.monotonic() + timeout
    while True:
        health: dict[str, Any] = server.get("/healthz")
        if health["pruned_through"] >= target:
            return health
        assert time.monotonic() < end, f"pruned through {health['pruned_through']}, not {target}"
        time.sleep(0.05)


def opening(server: Server, last_id: int, symbols: str = SYMBOLS_ASKED) -> list[Message]:
    """Open a stream resuming from ``last_id``; return its frames up to live (or reset)."""
    headers = {"Last-Event-ID": str(last_id)}
    with SSEStream(f"{server.base}/stream?symbols={symbols}", headers) as stream:
        return stream.ticks_until(lambda f: f.event in ("live", "reset"))


def resumed(server: Server, last_id: int, symbols: str, until: int) -> list[Message]:
    """Resume from ``last_id``; return the frames up to the tick ``until`` or a reset."""
    headers = {"Last-Event-ID": str(last_id)}
    with SSEStream(f"{server.base}/stream?symbols={symbols}", headers) as stream:
        return stream.ticks_until(
            lambda f: f.event == "reset" or (f.id is not None and int(f.id) >= until)
        )


def fresh_snapshot(server: Server, symbols: str = "BTC-USD,AAPL") -> Message:
    """Open a stream with no last id; return its snapshot."""
    with SSEStream(f"{server.base}/stream?symbols={symbols}") as fresh:
        return fresh.ticks_until(lambda f: f.event == "snapshot")[-1]


@pytest.mark.server
def test_pruning_by_count_keeps_ids_monotonic_and_expires_old_resume_points(
    serve: Callable[..., Server],
) -> None:
    server = serve(retention="20", heartbeat=0.5, **PRUNING)
    # A client that is live while retention runs receives every tick, in order.
    watcher = SSEStream(server.base + "/stream?symbols=BTC-USD,ETH-USD,AAPL")
    frames = watcher.frames()
    next(frames)
    assert next(frames).event == "snapshot"

    ids = server.post_ticks([{"symbol": SYMBOLS[i % 3], "price": f"{i + 1}.5"} for i in range(100)])
    assert ids == sorted(ids) and len(set(ids)) == 100
    health = wait_pruned_through(server, ids[79])
    assert health["pruned_through"] == ids[79]
    assert log_ids(server.db_url) == ids[80:]
    assert health["head"] == ids[-1]

    # Later ids continue above everything handed out before, never reusing one.
    later = server.post_ticks([{"symbol": "BTC-USD", "price": "200.25"} for _ in range(30)])
    assert min(later) > max(ids)
    wait_pruned_through(server, later[9])
    assert log_ids(server.db_url) == later[10:]
    live = watcher.ticks_until(lambda f: f.id is not None and int(f.id) >= later[-1])
    assert tick_ids(live) == ids + later  # the live client lost nothing to retention
    watcher.close()

    # An id that retention deleted gets a reset naming the head, then live ticks.
    got = eventually(
        lambda: expired_on_resume(server.base, ids[10], SYMBOLS_ASKED),
        "every worker's hub knows the horizon",
    )
    reset = got[-1]
    assert reset.event == "reset" and reset.json()["reason"] == "expired"
    assert reset.id == str(later[-1]) and reset.json()["head"] == later[-1]
    assert [t["price"] for t in reset.json()["ticks"]] == ["200.25"]  # AAPL was pruned
    assert tick_ids(got) == []
    # A new client's snapshot agrees with /api/snapshot: AAPL's last tick is gone too.
    expected = server.get("/api/snapshot?symbols=BTC-USD,AAPL")
    snapshot = eventually(
        lambda: (got := fresh_snapshot(server)).json() == expected and got,
        "the stream's snapshot agrees with /api/snapshot",
    )
    assert [t["symbol"] for t in snapshot.json()["ticks"]] == ["BTC-USD"]

    # The prune horizon itself is still a resume point: the client saw all up to it.
    horizon = server.get("/healthz")["pruned_through"]
    got = opening(server, horizon, symbols="BTC-USD")
    assert got[-1].event == "live"
    assert tick_ids(got) == log_ids(server.db_url, ["BTC-USD"], after=horizon)
    got_metrics = server.metrics()
    assert got_metrics["ticker_log_pruned_events_total"] == 80 + 30
    assert got_metrics["ticker_log_pruned_through_id"] == horizon
    assert got_metrics['ticker_stream_resets_total{reason="expired"}'] == 1


@pytest.mark.server
def test_pruning_by_age_down_to_an_empty_log_never_reuses_an_id(
    serve: Callable[..., Server],
) -> None:
    server = serve(retention="1h", **PRUNING)
    old = server.post_ticks(
        [{"symbol": SYMBOLS[i % 3], "price": f"{i + 1}", "ts": HOUR_AGO} for i in range(40)]
    )
    young = server.post_ticks([{"symbol": "AAPL", "price": "230.5"} for _ in range(5)])
    wait_pruned_through(server, old[-1])
    assert log_ids(server.db_url) == young  # only what is older than an hour went

    got = eventually(
        lambda: expired_on_resume(server.base, old[3], SYMBOLS_ASKED),
        "every worker's hub knows the horizon",
    )
    assert got[-1].json()["reason"] == "expired"
    assert got[-1].json()["head"] == young[-1]

    # Everything old: retention empties the table; the head and the ids go on.
    stale = server.post_ticks([{"symbol": "ETH-USD", "price": "3.5", "ts": HOUR_AGO}] * 10)
    # The old ticks after the young ones stay: retention cuts the log from its old end.
    assert log_ids(server.db_url) == young + stale
    end = time.monotonic() + 10
    while log_ids(server.db_url):  # the young ticks are a second old soon
        done = run_ticker("prune", database_url=server.db_url, retention="1s")
        assert done.returncode == 0, done.stderr
        assert time.monotonic() < end, "ticker prune did not empty the log"
        time.sleep(0.2)
    health = server.get("/healthz")
    assert health["head"] == health["pruned_through"] == stale[-1]
    after = server.post_ticks([{"symbol": "BTC-USD", "price": "1.25"}])
    assert after[0] > stale[-1]
    # (The new tick may come in the replay or just after it, live: a worker's
    # hub opens streams at the head its follower has read.)
    got = resumed(server, stale[-1], "BTC-USD", until=after[-1])
    assert "reset" not in [f.event for f in got] and tick_ids(got) == after
    got = eventually(
        lambda: expired_on_resume(server.base, young[0], SYMBOLS_ASKED),
        "every hub knows the prune horizon",
    )
    assert got[-1].json()["head"] == after[0]


def test_prune_deletes_in_short_batches(db_url: str) -> None:
    upgrade(create_app({"database_url": db_url}))
    engine: Engine = make_engine(db_url)
    try:
        log.append(engine, [Tick("AAPL", f"{i + 1}", now_us()) for i in range(1050)])
        deletes: list[int] = []

        @event.listens_for(engine, "after_execute")
        def count(
            conn: Any, clause: Any, multiparams: Any, params: Any, options: Any, result: Any
        ) -> None:
            if getattr(clause, "is_delete", False):
                deletes.append(result.rowcount)

        assert log.prune(engine, Retention(max_events=50), now_us(), batch=100) == 1000
        # Each batch is its own short transaction: writers and readers get in between.
        assert deletes == [100] * 10
        with engine.connect() as conn:
            position = log.position(conn)
        assert position.pruned_through == 1000 and position.head == 1050
    finally:
        engine.dispose()


def readme_sql(start: str) -> str:
    """Return the SQL of the README's restore step that begins with ``start``."""
    text = (ROOT / "README.md").read_text().split("### Backup and restore", 1)[1]
    found = re.search(r'"(' + re.escape(start) + r'[^"]*)"', text)
    assert found, start
    return found.group(1)


def test_backup_and_restore_as_the_readme_says_never_reuses_an_id(
    db_url: str, tmp_path: Path
) -> None:
    sqlite = db_url.startswith("sqlite")
    tools = ["sqlite3"] if sqlite else ["pg_dump", "pg_restore", "psql"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    upgrade(create_app({"database_url": db_url}))
    engine = make_engine(db_url)
    ticks = [Tick("AAPL", f"{i + 1}", now_us()) for i in range(10)]
    kept = log.append(engine, ticks)
    path = db_url.removeprefix("sqlite:///")
    cli_url = db_url.replace("postgresql+psycopg://", "postgresql://")
    backup = tmp_path / "backup"

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    if sqlite:
        run("sqlite3", path, f".backup '{backup}'")
    else:
        run("pg_dump", "--format=custom", f"--file={backup}", cli_url)
    lost = log.append(engine, ticks)  # handed out after the backup, then lost
    engine.dispose()

    if sqlite:
        shutil.copy(backup, path)
        for suffix in ("-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        run("sqlite3", path, readme_sql("UPDATE sqlite_sequence"))
    else:
        run("pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={cli_url}", backup)
        run("psql", cli_url, "-c", readme_sql("SELECT setval("))
    engine = make_engine(db_url)
    try:
        assert log_ids(db_url) == kept
        after = log.append(engine, ticks[:1])
        assert after[0] > max(lost)
    finally:
        engine.dispose()
