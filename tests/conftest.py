"""Shared fixtures: a clean environment, apps, a migrated engine and followers, servers.

Helpers that tests import live in ``fakes`` and ``servers``; nothing imports this file.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests import servers
from tests.browser import chromium
from tests.fakes import SYMBOLS, TOKEN, Clock, FakeExchange, eventually, started_since
from tests.pages import Browser
from tests.servers import Server
from ticker import create_app, lifecycle
from ticker.cli import upgrade
from ticker.db import make_engine
from ticker.follower import Follower
from ticker.hub import Hub
from ticker.state import app_state


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
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the test's database, migrated and empty."""
    upgrade(create_app({"database_url": db_url}))
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def follow(engine: Engine) -> Iterator[Callable[..., tuple[Follower, Hub]]]:
    """Build started followers on the test's log, each with its own hub; stop them after."""
    made: list[Follower] = []

    def build(**options: Any) -> tuple[Follower, Hub]:
        hub = Hub()
        follower = Follower(engine, hub, **{"poll_interval": 0.05, "symbols": SYMBOLS, **options})
        made.append(follower)
        follower.start()
        return follower, hub

    others = set(threading.enumerate())
    yield build
    for follower in made:
        follower.stop()
    eventually(lambda: not started_since(others), "the followers' threads ended", 5)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Tell ``servers`` which test runs, so starting a server can check its ``server`` mark."""
    servers.current_test = item
    try:
        return (yield)
    finally:
        servers.current_test = None


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
    servers.require_server_mark("a gunicorn server (the `serve` fixture)")
    started: list[Server] = []
    log_path = tmp_path / "server.log"

    def start(**config: Any) -> Server:
        """Start ``ticker serve`` with ``config`` as ``TICKER_*`` (``workers``, ``port`` aside)."""
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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Start Debian's chromium headless on a fresh profile; skip when it is not there."""
    with chromium(
        tmp_path / "chromium-profile",
        viewport={"width": 1100, "height": 640},
        timezone_id="UTC",
        locale="en-US",
    ) as context:
        page = context.pages[0] if context.pages else context.new_page()
        driver = Browser(page)
        yield driver
        assert driver.problems == []
        assert driver.dialogs == []
