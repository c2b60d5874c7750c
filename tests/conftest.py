"""Shared fixtures: a clean environment, an app on its own SQLite file, real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, text

from tests.fakes import Clock, FakeExchange
from ticker import ROOT, create_app, lifecycle
from ticker.cli import upgrade
from ticker.state import app_state

TOKEN = "test-token"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop every TICKER_* variable so the machine's settings never leak into a test."""
    for name in list(os.environ):
        if name.startswith("TICKER_"):
            monkeypatch.delenv(name)


# The machine's PostgreSQL; tests create and drop a database of their own in it.
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_pg_problem: list[str] = []


def postgres_problem() -> str | None:
    """Return why PostgreSQL cannot be used for tests, or None when it can."""
    if not _pg_problem:
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
                _pg_problem.append("")
        except Exception as exc:
            _pg_problem.append(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}".strip())
    return _pg_problem[0] or None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new database in the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ticker.db'}"
        return
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    import psycopg

    name = f"ticker_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    """A fake price API on 127.0.0.1 serving what the test queues."""
    fake = FakeExchange()
    yield fake
    fake.close()


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand, for producers' back-off."""
    return Clock()


@pytest.fixture
def sqlite_only(db_url: str) -> None:
    """Skip the test on PostgreSQL: it checks something only SQLite has."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite-specific")


@pytest.fixture
def make_app(db_url: str) -> Iterator[Callable[..., Any]]:
    """Build apps on the test's database, migrated, the producer off unless asked.

    Whatever an app started in the background (the follower ``/healthz`` starts,
    a producer) is stopped when the test ends.
    """
    built: list[Any] = []

    def build(**config: Any) -> Any:
        settings = {"database_url": db_url, "producer": "off", "publish_token": TOKEN, **config}
        app = create_app(settings)
        upgrade(app)
        built.append(app)
        return app

    yield build
    for app in built:
        lifecycle.stop(app_state(app))


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# How the README starts ticker under gunicorn: the CLI, plain gunicorn in the
# checkout (it reads gunicorn.conf.py there), and plain gunicorn from elsewhere,
# pointed at the checkout's config (gunicorn reads no gunicorn.conf.py after --chdir).
ELSEWHERE = ["-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(ROOT)]
STARTS = {
    "serve": lambda workers: ["-m", "ticker.cli", "serve"],
    "plain": lambda workers: ["-m", "gunicorn", "-k", "gevent", "-w", str(workers), "wsgi:app"],
    "elsewhere": lambda workers: ["-m", "gunicorn", *ELSEWHERE, "-w", str(workers), "wsgi:app"],
}


class Server:
    """ticker under real gunicorn in a subprocess, started as ``start`` names; real HTTP."""

    def __init__(
        self, db_url: str, log_path: Path, workers: int = 2, start: str = "serve", **config: Any
    ) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
        env.update({"TICKER_DATABASE_URL": db_url, "TICKER_PUBLISH_TOKEN": TOKEN})
        env.update({f"TICKER_{k.upper()}": str(v) for k, v in config.items()})
        env.update({"PORT": str(self.port), "WEB_CONCURRENCY": str(workers)})
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *STARTS[start](workers)],
            env=env,
            cwd=log_path.parent if start == "elsewhere" else ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                return self.get("/healthz")
            except (OSError, urllib.error.URLError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.load(response)

    def post_ticks(self, ticks: list[dict[str, Any]] | dict[str, Any]) -> list[int]:
        request = urllib.request.Request(
            self.base + "/api/ticks",
            data=json.dumps(ticks).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            ids: list[int] = json.load(response)["ids"]
            return ids

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, so fixtures can see whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def serve(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Server]]:
    """Start servers on the test's database; every one is stopped at the end.

    When the test fails, the servers' log is printed with the failure.
    """
    started: list[Server] = []
    log_path = tmp_path / "server.log"

    def start(**config: Any) -> Server:
        server = Server(db_url, log_path, **config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and log_path.exists():
        print(f"--- server log ({log_path}), last 200 lines ---")
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-200:]))


def eventually(check: Callable[[], T], what: str, timeout: float = 15) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        time.sleep(0.05)


def log_ids(db_url: str, symbols: list[str] | None = None, after: int = 0) -> list[int]:
    """Return the ids in the log after ``after``, of ``symbols`` if given, straight from SQL."""
    engine = create_engine(db_url)
    query = "SELECT id FROM ticks WHERE id > :after"
    params: dict[str, Any] = {"after": after}
    if symbols:
        names = ", ".join(f":s{i}" for i in range(len(symbols)))
        query += f" AND symbol IN ({names})"
        params.update({f"s{i}": s for i, s in enumerate(symbols)})
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text(query + " ORDER BY id"), params)]
    engine.dispose()
    return ids
