"""The engine on a real SQLite file: WAL checkpoints run beside the writers, and bound the WAL."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.fakes import eventually
from ticker import db, log
from ticker.events import Tick
from ticker.state import app_state

T0 = 1_795_255_200_000_000  # 2026-11-21T10:00:00Z
LIMIT = 8 * 1024 * 1024


@pytest.fixture
def small_wal_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "WAL_LIMIT", LIMIT)  # a flood passes it within a second


def test_commits_never_checkpoint_and_a_thread_of_its_own_does(sqlite_only: None, app: Any) -> None:
    engine = app_state(app).engine
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    log.append(engine, [Tick("BTC-USD", "1.5", T0)])
    checkpointer = db.checkpointer(engine)
    assert checkpointer is not None
    start = time.monotonic()
    while checkpointer.checkpoints == 0 and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert checkpointer.checkpoints >= 1


def test_the_wal_stays_bounded_under_a_flood_of_writes(
    sqlite_only: None, small_wal_limit: None, app: Any, db_url: str
) -> None:
    engine = app_state(app).engine
    wal = Path(db_url.removeprefix("sqlite:///") + "-wal")
    largest = commits = 0
    # Each commit appends at least two pages to the WAL (the table's, the index's):
    # unchecked, the WAL would hold every one of them, 16 times the limit at the end.
    end = time.monotonic() + 20
    while commits * 2 * 4096 < 16 * LIMIT and time.monotonic() < end:
        log.append(engine, [Tick("BTC-USD", f"{commits}.5", T0 + k) for k in range(20)])
        commits += 1
        if commits % 50 == 0:
            largest = max(largest, os.path.getsize(wal))
    assert commits * 2 * 4096 >= 16 * LIMIT, f"the flood was too small to tell: {commits} commits"
    assert largest < 6 * LIMIT, f"the WAL grew to {largest / 1e6:.1f} MB in {commits} commits"


def test_the_checkpoint_thread_ends_when_writes_stop_and_comes_back_with_them(
    sqlite_only: None, app: Any, db_url: str
) -> None:
    engine = app_state(app).engine
    log.append(engine, [Tick("BTC-USD", "1.5", T0)])

    def running() -> bool:
        return any(t.name == "sqlite-checkpoint" for t in threading.enumerate())

    assert running()
    eventually(lambda: not running(), "the checkpoint thread ended", 10)
    log.append(engine, [Tick("BTC-USD", "2.5", T0)])
    assert running()


@pytest.mark.parametrize(("query", "limit"), [("", db.CONNECT_TIMEOUT), ("?connect_timeout=1", 1)])
def test_a_postgresql_host_that_never_answers_fails_the_connection_in_time(
    query: str, limit: float
) -> None:
    """A host that takes the connection and says nothing (a hung server, a black-holed
    proxy) fails it after the timeout, the URL's own when it names one."""
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never answers
    port = silent.getsockname()[1]
    engine = db.make_engine(f"postgresql+psycopg://root@127.0.0.1:{port}/test{query}")
    failed: list[tuple[float, Exception]] = []

    def connect() -> None:
        try:
            engine.connect()
        except OperationalError as exc:
            failed.append((time.monotonic() - began, exc))

    began = time.monotonic()
    attempt = threading.Thread(target=connect, daemon=True)  # without a timeout: for ever
    attempt.start()
    attempt.join(limit + 3)
    silent.close()
    engine.dispose()
    assert failed, f"still connecting after {limit + 3} s"
    took, error = failed[0]
    assert "timeout" in str(error) and limit - 0.5 < took < limit + 3
