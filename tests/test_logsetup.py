"""Structured logs: one line per event, request ids on streams, never a secret."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import QUIET, SQLITE_ONLY, TOKEN, eventually
from tests.servers import Server
from tests.sse_client import SSEStream
from ticker import logsetup
from ticker.config import LogSettings, load_log_settings
from ticker.errors import ConfigError


def record(name: str, message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, message, args or None, None)
    rec.__dict__.update(extra)
    return rec


def test_log_lines_are_one_line_each_with_their_fields() -> None:
    plain = record("ticker.views", "stream opened", request_id="r-1", symbols="A,B", last_id=None)
    line = logsetup.JsonFormatter().format(plain)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "stream opened" and parsed["request_id"] == "r-1"
    assert parsed["level"] == "INFO" and parsed["logger"] == "ticker.views"
    assert parsed["ts"].endswith("Z")
    text = logsetup.TextFormatter().format(plain)
    assert text.endswith("ticker.views: stream opened request_id=r-1 symbols=A,B last_id=None")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        failed = record("ticker.x", "it broke:\nbadly")
        failed.exc_info = sys.exc_info()
    for formatter in (logsetup.JsonFormatter(), logsetup.TextFormatter()):
        line = formatter.format(failed)
        assert "\n" not in line and "ValueError" in line, type(formatter).__name__


def test_access_lines_never_carry_request_headers() -> None:
    atoms = {
        "h": "10.0.0.9",
        "m": "POST",
        "U": "/api/ticks",
        "q": "",
        "s": "201",
        "B": 12,
        "M": 3,
        "a": "curl/8",
        "{authorization}i": f"Bearer {TOKEN}",
        "{cookie}i": "session=secret",
        "{x-request-id}o": "r-9",
    }
    access = record("gunicorn.access", '%(h)s "%({authorization}i)s"', atoms)
    for formatter in (logsetup.JsonFormatter(), logsetup.TextFormatter()):
        line = formatter.format(access)
        assert TOKEN not in line and "secret" not in line, line
        assert "r-9" in line and "/api/ticks" in line and "201" in line


def test_the_logging_config_follows_the_log_settings() -> None:
    quiet = logsetup.logging_config(LogSettings())
    assert quiet["root"]["level"] == "INFO"
    assert quiet["formatters"]["line"]["()"].endswith(".TextFormatter")
    assert quiet["loggers"]["gunicorn.access"]["level"] == "CRITICAL"
    loud = logsetup.logging_config(LogSettings(level="DEBUG", format="json", access_log=True))
    assert loud["root"]["level"] == loud["loggers"]["gunicorn.error"]["level"] == "DEBUG"
    assert loud["formatters"]["line"]["()"].endswith(".JsonFormatter")
    assert loud["loggers"]["gunicorn.access"]["level"] == "INFO"


@pytest.mark.parametrize(
    ("name", "value"),
    [("TICKER_LOG_LEVEL", "chatty"), ("TICKER_LOG_FORMAT", "xml"), ("TICKER_ACCESS_LOG", "maybe")],
)
def test_a_bad_log_setting_stops_the_command_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_log_settings({name: value})
    done = subprocess.run(
        [sys.executable, "-m", "ticker.cli", "prune"],
        env={"PATH": "/usr/bin:/bin", name: value},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and name in done.stderr


@pytest.mark.server
@SQLITE_ONLY
def test_server_logs_are_json_lines_with_request_ids_and_no_secrets(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    import urllib.error
    import urllib.request

    server = serve(**QUIET, log_format="json", access_log="true", heartbeat=0.3)
    server.post_ticks([{"symbol": "AAPL", "price": "230.5"}])
    wrong = urllib.request.Request(
        server.base + "/api/ticks",
        data=b'{"symbol": "AAPL", "price": "1"}',
        headers={"Authorization": "Bearer not-the-token-xyz", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(wrong, timeout=10)
    with SSEStream(server.base + "/stream?symbols=AAPL", {"X-Request-ID": "watch-42"}) as s:
        assert s.headers["X-Request-ID"] == "watch-42"
        frames = s.frames()
        next(frames)
        next(frames)
    log_path = server.log_path

    def lines() -> list[dict[str, Any]]:
        parsed = []
        for raw in log_path.read_text().splitlines():
            if raw.startswith("{"):
                parsed.append(json.loads(raw))  # every record is one JSON object on one line
        return parsed

    closed = eventually(
        lambda: [x for x in lines() if x["msg"] == "stream closed"], "the stream's closing line"
    )
    opened = [x for x in lines() if x["msg"] == "stream opened"]
    assert opened[0]["request_id"] == "watch-42" and opened[0]["symbols"] == "AAPL"
    assert closed[0]["request_id"] == "watch-42" and closed[0]["ended"] == "client gone"
    refused = [x for x in lines() if x["msg"].startswith("publish refused")]
    assert refused and refused[0]["level"] == "WARNING" and "request_id" in refused[0]
    requests = [x for x in lines() if x["msg"] == "request"]
    assert {x.get("path") for x in requests} >= {"/api/ticks", "/stream", "/healthz"}
    assert all(x["request_id"] for x in requests)
    text = log_path.read_text()
    assert TOKEN not in text and "not-the-token-xyz" not in text
    assert "authorization" not in text.lower()


def test_a_stopping_workers_closed_listener_is_logged_as_info_not_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gevent import socket as gsocket
    from gunicorn.config import Config

    from ticker.logsetup import GunicornLogger

    log = GunicornLogger(Config())
    listener = gsocket.socket()
    listener.close()  # as the gevent worker's listener is once it stops
    log.error_log.setLevel(logging.DEBUG)
    log.error_log.addHandler(caplog.handler)  # gunicorn's own logger does not propagate
    try:
        for failing in (listener.getsockname, lambda: os.read(-1, 1)):  # EBADF, elsewhere
            try:
                failing()
            except OSError:
                log.exception("Socket error processing request.")
    finally:
        log.error_log.removeHandler(caplog.handler)
    first, second = caplog.records
    assert first.levelno == logging.INFO and first.exc_info is None
    assert "stopped listening" in first.getMessage()
    assert second.levelno == logging.ERROR and second.exc_info is not None
