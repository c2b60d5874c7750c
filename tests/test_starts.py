"""However ticker is started, it runs the same way, or says at once what it lacks and why."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.fakes import eventually
from tests.servers import Server, free_port
from tests.sse_client import SSEStream
from ticker import ROOT
from ticker.boot_migration import THREAD, VERSION_WAIT, Migration
from ticker.cli import MIGRATIONS, at_head

pytestmark = pytest.mark.server

SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL"]
NOT_OURS = "without ticker's gunicorn settings"
NO_TAKEOVER = "cannot take streams over"


def lease_expiry(db_url: str) -> int | None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT expires_at FROM leases WHERE name = 'producer'")).first()
    engine.dispose()
    return None if row is None else int(row[0])


def metric(body: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.M)
    assert found, name
    return float(found.group(1))


@pytest.mark.parametrize("start", ["plain", "elsewhere"])
def test_plain_gunicorn_runs_like_ticker_serve(
    serve: Callable[..., Server], db_url: str, tmp_path: Path, start: str
) -> None:
    server = serve(workers=2, start=start, symbols=",".join(SYMBOLS), tick_interval=0.2)
    # Migrated by the master, producing under the lease, streams served by broadcasters.
    eventually(lambda: server.get("/healthz")["head"] > 0, "ticks produced")
    streams = [SSEStream(server.base + "/stream?symbols=BTC-USD") for _ in range(6)]
    for stream in streams:
        frames = stream.frames()
        assert next(frames).retry is not None
        assert next(frames).event == "snapshot"

    def every_worker_counts_all_streams() -> bool:
        body = urlopen_text(server.base + "/metrics")
        return metric(body, "ticker_streams_open") == len(streams)

    # Whichever worker answers, /metrics adds up both.
    for _ in range(4):
        eventually(every_worker_counts_all_streams, "open streams added up across workers")
    assert all(server.get("/healthz")["streams"]["broadcaster"] for _ in range(4))

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert lease_expiry(server.db_url) == 0, "the producer lease is handed on at exit"
    for stream in streams:
        stream.close()
    log = (tmp_path / "server.log").read_text()
    assert NOT_OURS not in log and NO_TAKEOVER not in log, log[-2000:]


def urlopen_text(url: str, timeout: float = 10) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return str(answer.read().decode())


def run_logged(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[Any]:
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def plain_env(db_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    env.update({"TICKER_DATABASE_URL": db_url, "TICKER_SOURCE": "none", "PORT": str(port)})
    return env


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("sync worker", NO_TAKEOVER),
        ("no gunicorn.conf.py", NOT_OURS),
        ("flask dev server", NOT_OURS),
    ],
)
def test_a_start_without_the_fast_path_says_so_once_naming_what_to_use(
    db_url: str, tmp_path: Path, how: str, says: str
) -> None:
    port = free_port()
    subprocess.run(
        [sys.executable, "-m", "ticker.cli", "db", "upgrade"],
        env=plain_env(db_url, port),
        check=True,
        capture_output=True,
    )
    gunicorn = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
    argv, cwd = {
        "sync worker": ([*gunicorn, "-k", "sync", "wsgi:app"], ROOT),
        # From another directory without -c: gunicorn finds no gunicorn.conf.py.
        "no gunicorn.conf.py": (
            [*gunicorn, "-k", "gevent", "--pythonpath", str(ROOT), "wsgi:app"],
            tmp_path,
        ),
        "flask dev server": (
            [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--port", str(port)],
            ROOT,
        ),
    }[how]
    log = tmp_path / "server.log"
    proc = run_logged(argv, plain_env(db_url, port), cwd, log)
    try:
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: _answers(base), f"{how} answering", timeout=30)
        with SSEStream(base + "/stream?symbols=BTC-USD") as stream:
            frames = stream.frames()
            next(frames)
            assert next(frames).event == "snapshot"  # it still streams, the slow way
        for _ in range(3):
            assert _answers(base)
        text_ = eventually(lambda: log.read_text() if says in log.read_text() else "", says)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    lines = [line for line in text_.splitlines() if says in line]
    assert len(lines) == 1, lines  # once, not per request
    assert "ticker serve" in lines[0] or "-k gevent" in lines[0], lines[0]


def _answers(base: str, timeout: float = 10) -> bool:
    try:
        urlopen_text(base + "/healthz", timeout=timeout)
    except OSError:
        return False
    return True


# ---- the migrations of a start ----


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_workers_load_while_the_migrations_run_and_serve_only_once_they_are_done(
    db_url: str, tmp_path: Path
) -> None:
    """A worker that cannot read the schema's version (a migration elsewhere holds it:
    here a lock taken before the start, released once the workers have booted) asks
    for the migrations, and waits for them before it touches the database."""
    url = db_url.replace("+psycopg", "")
    port = free_port()
    log = tmp_path / "server.log"
    with _migrations_held(url, plain_env(db_url, port), log) as (holder, proc):
        base = f"http://127.0.0.1:{port}"
        assert not _answers(base, timeout=1), "a worker served before the migrations ended"
        holder.rollback()  # the migrations go on, then the workers
        eventually(lambda: _answers(base), "answering once migrated", timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_start_migrates_a_database_behind_and_only_reads_one_at_head(
    db_url: str, tmp_path: Path
) -> None:
    """Each worker reads the schema's version; the migrations run only when it is behind."""
    from alembic.script import ScriptDirectory

    env = {**plain_env(db_url, free_port()), "TICKER_LOG_LEVEL": "INFO", "WEB_CONCURRENCY": "2"}
    upgrade = [sys.executable, "-m", "ticker.cli", "db", "upgrade"]
    subprocess.run([*upgrade, "0002"], env=env, check=True, capture_output=True)

    behind = _served(env, tmp_path / "behind.log")
    assert "Running upgrade 0002 -> 0003" in behind  # the migrations' process, logging
    engine = create_engine(db_url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert version == ScriptDirectory(str(MIGRATIONS)).get_current_head()

    at_head = _served(env, tmp_path / "at-head.log")
    assert at_head.count("Booting worker") == 2
    assert "alembic" not in at_head  # no migrations' process ran


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_worker_that_cannot_read_the_version_in_time_asks_for_the_migrations(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that does not answer must not hold a booting worker: past the limit it
    asks the master, whose migrations run (here, on a fresh database, they succeed)."""
    monkeypatch.setenv("TICKER_DATABASE_URL", db_url)  # for the migrations' process
    migration = Migration()
    migration.start()  # the master's side, in this process
    worker = SimpleNamespace(alive=True, notify=lambda: None)  # what gunicorn's offers
    hung = threading.Event()
    began = time.monotonic()
    try:
        assert migration.wait(worker, lambda: hung.wait(60))
    finally:
        hung.set()
        migration.remove()
    assert time.monotonic() - began < VERSION_WAIT + 20
    assert at_head(create_engine(db_url))


def test_the_master_thread_waiting_to_run_the_migrations_takes_no_signal() -> None:
    """gunicorn's handlers run in the master's main thread: a SIGTERM or SIGCHLD the kernel
    gave to a thread waiting on a pipe would wait for the main thread's next timeout."""
    migration = Migration()
    migration.start()
    wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
    try:
        thread = next(t for t in threading.enumerate() if t.name == THREAD)
        status = Path(f"/proc/self/task/{thread.native_id}/status")

        def blocked() -> set[int]:
            mask = int(re.findall(r"^SigBlk:\s*([0-9a-f]+)$", status.read_text(), re.M)[0], 16)
            return {n for n in wanted if mask & (1 << (n - 1))}

        eventually(lambda: blocked() == set(wanted), "the waiting thread blocks signals")
    finally:
        migration.remove()


def _served(env: dict[str, str], log: Path) -> str:
    """Start ``ticker serve``, wait until it answers, stop it; return what it logged."""
    proc = run_logged([sys.executable, "-m", "ticker.cli", "serve"], env, ROOT, log)
    try:
        eventually(lambda: _answers(f"http://127.0.0.1:{env['PORT']}"), "answering", timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    return log.read_text()


@contextmanager
def _migrations_held(
    url: str, env: dict[str, str], log: Path
) -> Iterator[tuple[Any, subprocess.Popen[Any]]]:
    """Start ``ticker serve`` with a lock on the schema's version taken before the start:
    the workers cannot read it, so its migrations run and wait for the lock; yield the
    lock's connection and the server once both workers have booted and the migrations
    wait."""
    import psycopg

    subprocess.run([sys.executable, "-m", "ticker.cli", "db", "upgrade"], env=env, check=True)
    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        proc = run_logged([sys.executable, "-m", "ticker.cli", "serve"], env, ROOT, log)
        try:
            eventually(lambda: log.read_text().count("Booting worker") == 2, "workers booting")
            eventually(lambda: _waiting_for_lock(url), "the migration waits for the lock")
            yield holder, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _alone_on_the_database(url: str) -> bool:
    return _other_sessions(url, "true") == 0


def _waiting_for_lock(url: str) -> bool:
    return _other_sessions(url, "wait_event_type = 'Lock'") > 0


def _other_sessions(url: str, where: str) -> int:
    """How many other sessions on the test's database match ``where`` (pg_stat_activity)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            f" AND pid <> pg_backend_pid() AND {where}"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_start_whose_migrations_fail_stops_saying_so(tmp_path: Path) -> None:
    missing = tmp_path / "no such directory" / "ticker.db"
    port = free_port()
    log = tmp_path / "server.log"
    argv = [sys.executable, "-m", "ticker.cli", "serve"]
    # Several workers: each finds the failure, one only may exit with the boot error
    # (a second one's, while gunicorn halts on the first, made its master exit 1).
    env = {**plain_env(f"sqlite:///{missing}", port), "WEB_CONCURRENCY": "6"}
    proc = run_logged(argv, env, ROOT, log)
    assert proc.wait(60) == 3  # gunicorn's "Worker failed to boot"
    text_ = log.read_text()
    assert "unable to open database file" in text_  # the migrations' own error
    assert "the migrations failed" in text_
    assert "Exception in worker process" not in text_  # said once, by the master
    assert not _answers(f"http://127.0.0.1:{port}")


def test_a_start_on_a_database_host_that_never_answers_stops_saying_so(tmp_path: Path) -> None:
    """A PostgreSQL host that takes the connection and says nothing (hung, black-holed):
    the workers' version check gives up, the migrations' connection times out, and the
    start ends with the boot error instead of waiting for ever."""
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never answers
    port = free_port()
    log = tmp_path / "server.log"
    url = f"postgresql://root@127.0.0.1:{silent.getsockname()[1]}/ticker"
    argv = [sys.executable, "-m", "ticker.cli", "serve"]
    proc = run_logged(argv, plain_env(url, port), ROOT, log)
    try:
        assert proc.wait(60) == 3  # gunicorn's "Worker failed to boot"
    finally:
        silent.close()
        if proc.poll() is None:
            proc.kill()
    text_ = log.read_text()
    assert "connection timeout expired" in text_ and "the migrations failed" in text_


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_under_reuse_port_a_starting_server_takes_no_connection_before_it_can_serve(
    db_url: str, tmp_path: Path
) -> None:
    """A deploy's overlap: the new server's workers listen only once ready, so while its
    migrations wait (held by a lock here) every request goes to the old server."""
    import json
    import urllib.request

    port = free_port()
    env = {**plain_env(db_url, port), "GUNICORN_CMD_ARGS": "--reuse-port"}
    old = run_logged([sys.executable, "-m", "ticker.cli", "serve"], env, ROOT, tmp_path / "old.log")
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _answers(base), "the old server answering", timeout=30)
        booted = (tmp_path / "old.log").read_text()
        old_pids = {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", booted)}
        url = db_url.replace("+psycopg", "")
        with _migrations_held(url, env, tmp_path / "new.log") as (holder, _):
            for _ in range(40):  # each on a connection of its own
                with urllib.request.urlopen(base + "/healthz", timeout=3) as answer:
                    assert json.load(answer)["streams"]["worker_pid"] in old_pids
            holder.rollback()  # the migrations go on, then the new workers
            answered = set()
            eventually(
                lambda: (
                    answered.add(
                        json.loads(urlopen_text(base + "/healthz"))["streams"]["worker_pid"]
                    )
                    or not answered <= old_pids
                ),
                "the new server answering once migrated",
                timeout=30,
            )
    finally:
        old.send_signal(signal.SIGTERM)
        old.wait(15)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_server_stopped_while_its_migrations_wait_exits_cleanly(
    db_url: str, tmp_path: Path
) -> None:
    url = db_url.replace("+psycopg", "")
    log = tmp_path / "server.log"
    with _migrations_held(url, plain_env(db_url, free_port()), log) as (_, proc):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(8) == 0  # not held up to the 10 s graceful timeout
    # The migrations, let go, finish on their own, with nobody left to tell.
    eventually(lambda: _alone_on_the_database(url), "the migrations finished")
    text_ = log.read_text()
    assert "Traceback" not in text_ and "ERROR" not in text_, text_[-2000:]
