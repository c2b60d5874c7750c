"""What the tests share inside their own process: fakes and helpers.

Fakes for the source tests (an exchange on 127.0.0.1: real HTTP, scripted
answers, every request recorded; a clock moved by hand), a writer that appends
straight to the log as another producer would, the symbols and settings most
tests use, helpers that read the log, streams and logs, and ``eventually``.
The real processes (gunicorn, ``ticker produce``) are in ``servers``.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, text

from tests.sse_client import Message, SSEStream
from ticker import lifecycle, log
from ticker.db import make_engine
from ticker.events import Tick, now_us
from ticker.hub import Hub
from ticker.producer import Producer
from ticker.state import app_state

T = TypeVar("T")

TOKEN = "test-token"  # the publish token of the tests' apps and servers
SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL"]
QUIET = {"source": "none", "symbols": ",".join(SYMBOLS)}  # ticks come only from the test
# What a test checks does not depend on the database: run it on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# The producer tests: a simulated source, fast, with a short lease.
INTERVAL = 0.2
SIM = {"source": "sim", "symbols": "BTC-USD,AAPL", "tick_interval": INTERVAL, "lease_ttl": 1.5}


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


def tick_ids(frames: list[Message]) -> list[int]:
    """Return the ids of the ``tick`` events among ``frames``, in the order read."""
    return [int(f.id) for f in frames if f.event == "tick" and f.id is not None]


def log_ids(db_url: str, symbols: list[str] | None = None, after: int = 0) -> list[int]:
    """Return the ids in the log after ``after``, of ``symbols`` if given, straight from SQL."""
    engine = create_engine(db_url)
    query = "SELECT id FROM ticks WHERE id > :after"
    params: dict[str, Any] = {"after": after}
    if symbols:
        names = ", ".join(f":s{i}" for i in range(len(symbols)))
        query += f" AND symbol IN ({names})"
        params.update({f"s{i}": s for i, s in enumerate(symbols)})
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text(query + " ORDER BY id"), params)]
    finally:
        engine.dispose()


def ticks_of(db_url: str, symbol: str) -> list[tuple[int, int]]:
    """Return ``(id, ts)`` of every tick of ``symbol``, by id."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, ts FROM ticks WHERE symbol = :s ORDER BY id"), {"s": symbol}
            )
            return [(int(r[0]), int(r[1])) for r in rows]
    finally:
        engine.dispose()


def assert_one_tick_per_interval(db_url: str, symbol: str) -> None:
    """Two producers would put about two ticks in every interval.

    One producer's runs may start late (the first run of a new process, a busy
    core), so single gaps can be short; the count over the whole span and the
    typical gap cannot be, unless something produced twice.
    """
    ts = [t for _, t in ticks_of(db_url, symbol)]
    assert len(ts) >= 3, "too few ticks"
    span = (ts[-1] - ts[0]) / 1e6
    assert len(ts) - 1 <= span / INTERVAL + 1, f"{len(ts)} ticks in {span:.2f}s: produced twice"
    gaps = sorted((b - a) / 1e6 for a, b in itertools.pairwise(ts))
    median = gaps[len(gaps) // 2]
    assert median > INTERVAL * 0.8, f"typical gap {median:.3f}s: produced twice"


class LogWriter(threading.Thread):
    """Append ticks straight into the log, as a separate producer process would."""

    def __init__(self, db_url: str, symbols: list[str], interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(db_url)
        self.symbols = symbols
        self.interval = interval
        self.stopped = threading.Event()
        self.ids: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stopped.wait(self.interval):
                symbol = self.symbols[n % len(self.symbols)]
                price = f"{100 + (n * 7919) % 97}.{n % 100:02d}"
                self.ids.extend(log.append(self.engine, [Tick(symbol, price, now_us())]))
                n += 1
        except BaseException as exc:
            self.error = exc

    def finish(self) -> list[int]:
        self.stopped.set()
        self.join(30)
        self.engine.dispose()
        assert self.error is None, self.error
        return self.ids


@dataclass
class Answer:
    """What the fake answers one request with."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # say nothing until the exchange closes: the client times out


def ok(payload: Any, status: int = 200, **headers: str) -> Answer:
    """Answer with ``payload`` as JSON (a string is sent as it is, e.g. broken JSON)."""
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    return Answer(status, body, {"Content-Type": "application/json", **headers})


HANG = Answer(hang=True)


@dataclass(frozen=True)
class Request:
    """One request the fake received, and the status it got."""

    path: str
    query: dict[str, list[str]]
    status: int | None


class FakeExchange:
    """Serve scripted answers per path; past the script, ``then(path, query)`` (a 503)."""

    def __init__(self) -> None:
        self.scripts: dict[str, deque[Answer]] = {}
        self.then: Callable[[str, dict[str, list[str]]], Answer] = lambda path, query: ok(
            {"message": "no script"}, 503
        )
        self.requests: list[Request] = []
        self.served: list[tuple[str, dict[str, list[str]], bytes]] = []  # the 200 answers
        self.lock = threading.Lock()
        self.closed = threading.Event()
        exchange = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                answer = exchange.next_answer(url.path, query)
                if answer.hang:
                    exchange.record(Request(url.path, query, None))
                    exchange.closed.wait(30)
                    self.close_connection = True
                    return
                exchange.record(Request(url.path, query, answer.status))
                if answer.status == 200:
                    with exchange.lock:
                        exchange.served.append((url.path, query, answer.body))
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def script(self, path: str, *answers: Answer) -> None:
        """Queue ``answers`` for the next requests to ``path``."""
        with self.lock:
            self.scripts.setdefault(path, deque()).extend(answers)

    def next_answer(self, path: str, query: dict[str, list[str]]) -> Answer:
        with self.lock:
            queue = self.scripts.get(path)
            if queue:
                return queue.popleft()
        return self.then(path, query)

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def count(self, path: str | None = None) -> int:
        """Return how many requests (to ``path``, if given) arrived."""
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


class Clock:
    """The producer's back-off clock, moved by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def log_rows(where: Flask | str) -> list[tuple[str, str]]:
    """Return ``(symbol, price)`` of every event, by id, in an app's log or a database's."""
    engine = create_engine(where) if isinstance(where, str) else app_state(where).engine
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT symbol, price FROM ticks ORDER BY id"))
            return [(str(r[0]), str(r[1])) for r in rows]
    finally:
        if isinstance(where, str):
            engine.dispose()


def due(producer: Producer, clock: Clock) -> None:
    """Move the clock to the next interval at which the producer may ask again."""
    clock.now = max(clock.now + producer.settings.tick_interval, producer.state.retry_at)


def asked_at(producer: Producer, exchange: FakeExchange, clock: Clock, seconds: int) -> list[int]:
    """Run the producer once a second for ``seconds``; return the seconds at which it asked."""
    asked = []
    start = clock.now
    for second in range(seconds):
        clock.now = start + second
        before = exchange.count()
        producer.produce()
        if exchange.count() > before:
            asked.append(second)
    return asked


def stop(app: Flask) -> None:
    """Stop what the app started and close its source and its connections."""
    state = app_state(app)
    lifecycle.stop(state)
    state.engine.dispose()
    state.stream_engine.dispose()


@contextmanager
def captured(name: str = "ticker", level: int = logging.WARNING) -> Iterator[list[str]]:
    """Collect the messages logged under ``name``.

    Not caplog: the Alembic upgrade of a test's app reconfigures the root logger
    and drops caplog's handler.
    """
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level)
    logger = logging.getLogger(name)
    was = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(was)


# How long a source waits for the fake's answer. Generous, since a loaded CI
# machine can take a few hundred milliseconds to answer even a good request
# (0.3 s timed out once there); the HANG tests wait this long.
SOURCE_TIMEOUT = 1.0


def source_apps(
    make_app: Callable[..., Flask], exchange: FakeExchange, clock: Clock, source: str, symbols: str
) -> Iterator[Callable[..., tuple[Flask, Producer]]]:
    """Yield a builder of apps whose producer asks ``exchange`` on ``clock``; stop them after."""
    apps: list[Flask] = []

    def build(**config: Any) -> tuple[Flask, Producer]:
        settings = {
            "source": source,
            "source_url": exchange.url,
            "symbols": symbols,
            "source_timeout": SOURCE_TIMEOUT,
            **config,
        }
        app = make_app(**settings)
        apps.append(app)
        producer: Producer = app_state(app).producer
        producer.clock = clock
        return app, producer

    yield build
    for app in apps:
        stop(app)


def rewind_log(db_url: str, to_id: int) -> None:
    """Move the log back to ``to_id``, as a restored backup or a lagging standby would.

    The newer rows go and the id sequence moves back, so the ids after ``to_id``
    will be handed out again.
    """
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ticks WHERE id > :id"), {"id": to_id})
            if engine.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT setval(pg_get_serial_sequence('ticks', 'id'), :id)"),
                    {"id": to_id},
                )
            else:
                conn.execute(
                    text("UPDATE sqlite_sequence SET seq = :id WHERE name = 'ticks'"),
                    {"id": to_id},
                )
    finally:
        engine.dispose()


def started_since(others: set[threading.Thread]) -> list[threading.Thread]:
    """Return the follower threads (the reader, the LISTEN one) alive now but not in ``others``."""
    return [t for t in threading.enumerate() if t.name.startswith("ticker-") and t not in others]


def append(engine: Engine, n: int = 1, symbol: str | None = None) -> list[int]:
    """Append ``n`` ticks in one transaction, as some producer would; return their ids."""
    ticks = [Tick(symbol or SYMBOLS[i % 3], f"{i + 1}.25", now_us()) for i in range(n)]
    return log.append(engine, ticks)


def in_log(engine: Engine, after: int = 0) -> list[tuple[int, str, str]]:
    """Return ``(id, symbol, price)`` of the log's events after ``after``, by id."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, symbol, price FROM ticks WHERE id > :a ORDER BY id"), {"a": after}
        )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def in_hub(hub: Hub, after: int) -> list[tuple[int, str, str]]:
    """Return ``(id, symbol, price)`` of what the hub holds after ``after``, as streams read it."""
    batch = hub.read(after, None, limit=1_000_000)
    assert batch is not None, f"the hub no longer holds {after}"
    found = []
    for message in batch.messages:
        lines = dict(line.split(": ", 1) for line in message.decode().strip().split("\n"))
        data = json.loads(lines["data"])
        assert int(lines["id"]) == data["id"] and lines["event"] == "tick", message
        found.append((data["id"], data["symbol"], data["price"]))
    return found


def expired_on_resume(base: str, last_id: int, symbols: str | None = None) -> list[Message] | None:
    """Resume a stream from ``last_id``; return its frames up to a reset, or None if it went live.

    A worker's hub learns the prune horizon at its follower's next read (at
    once in the pruning worker and on PostgreSQL, within a poll on SQLite);
    until then it may replay from memory the events just deleted, so a test
    asks again (``eventually``) until the worker it reaches says ``expired``.
    """
    url = base + "/stream" + (f"?symbols={symbols}" if symbols else "")
    with SSEStream(url, {"Last-Event-ID": str(last_id)}) as stream:
        got = stream.ticks_until(lambda f: f.event in ("live", "reset"))
    return got if got[-1].event == "reset" else None
