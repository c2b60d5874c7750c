"""Fakes for the source tests: an exchange on 127.0.0.1 (real HTTP, scripted answers,
every request recorded), a clock moved by hand, and helpers to read the log and the logs."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask
from sqlalchemy import create_engine, text

from ticker import lifecycle
from ticker.producer import Producer
from ticker.state import app_state


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


def stop(app: Flask) -> None:
    """Stop what the app started and close its source and its connections."""
    lifecycle.stop(app_state(app))
    app_state(app).engine.dispose()


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
            "source_timeout": 0.3,
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
