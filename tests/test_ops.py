"""Operations over real gunicorn: the knobs, graceful shutdown, and the busy answer and CORS
as a real browser's EventSource meets them."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import chromium as launch_chromium
from tests.fakes import QUIET, SQLITE_ONLY, SYMBOLS, TOKEN, LogWriter, eventually, log_ids
from tests.servers import Server, free_port
from tests.sse_client import SSEStream
from ticker.config import load_settings
from ticker.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "raw"),
    [("BUSY_RETRY", "0"), ("BUSY_RETRY", "soon"), ("PRUNE_INTERVAL", "0"), ("PRUNE_INTERVAL", "x")],
)
def test_the_operations_knobs_are_checked(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"TICKER_{name}"):
        load_settings("sqlite:///x.db", {f"TICKER_{name}": raw})
    settings = load_settings("sqlite:///x.db", {})
    assert (settings.busy_retry, settings.prune_interval) == (20.0, None)
    settings = load_settings(
        "sqlite:///x.db", {"TICKER_BUSY_RETRY": "1.5", "TICKER_PRUNE_INTERVAL": "0.5"}
    )
    assert (settings.busy_retry, settings.prune_interval) == (1.5, 0.5)


# ---- graceful shutdown ----


class ChunkedStream(threading.Thread):
    """Read one stream over a raw socket, checking HTTP/1.1 chunked framing to the end."""

    def __init__(self, base: str, path: str, last_id: int) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(base)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        head = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nLast-Event-ID: {last_id}\r\n\r\n"
        self.sock.sendall(head.encode())
        self.body = b""
        self.outcome = "reading"
        self.ended_at = 0.0

    def run(self) -> None:
        reader = self.sock.makefile("rb")
        try:
            assert reader.readline().startswith(b"HTTP/1.1 200")
            headers = []
            while (line := reader.readline()) not in (b"\r\n", b""):
                headers.append(line.lower())
            assert b"transfer-encoding: chunked\r\n" in headers
            while True:
                size_line = reader.readline()
                if not size_line:
                    self.outcome = "torn: the connection ended inside the chunked body"
                    return
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    reader.readline()
                    self.outcome = "clean"
                    return
                data = reader.read(size)
                if len(data) < size or reader.read(2) != b"\r\n":
                    self.outcome = "torn: a chunk was cut short"
                    self.body += data
                    return
                self.body += data
        except Exception as exc:
            self.outcome = f"failed: {exc!r}"
        finally:
            self.ended_at = time.monotonic()
            self.sock.close()

    def frames(self) -> list[bytes]:
        return self.body.split(b"\n\n")

    def last_id(self) -> int:
        """Return the last ``id:`` a browser would hold (ticks and keepalives alike)."""
        last = 0
        for frame in self.frames():
            for line in frame.split(b"\n"):
                if line.startswith(b"id: "):
                    last = int(line[4:])
        return last

    def tick_ids(self) -> list[int]:
        found = []
        for frame in self.frames():
            lines = frame.split(b"\n")
            if b"event: tick" in lines:
                found.append(int(next(x for x in lines if x.startswith(b"id: "))[4:]))
        return found


@pytest.mark.server
@pytest.mark.parametrize("how", ["serve", "plain", "elsewhere"])
def test_sigterm_ends_streams_between_messages_and_a_reconnect_loses_nothing(
    serve: Callable[..., Server], db_url: str, how: str
) -> None:
    """However gunicorn is started, SIGTERM to its master ends every stream cleanly at once."""
    config = {**QUIET, "heartbeat": 0.5}
    old = serve(workers=2, start=how, **config)
    start = old.post_ticks([{"symbol": s, "price": "1.5"} for s in SYMBOLS])[-1]
    # Ticks keep flowing straight into the log, as from a producer on another host.
    writer = LogWriter(db_url, SYMBOLS, interval=0.004)
    writer.start()
    try:
        readers = [ChunkedStream(old.base, "/stream?symbols=BTC-USD,AAPL", start) for _ in range(8)]
        for reader in readers:
            reader.start()
        eventually(lambda: all(len(r.tick_ids()) >= 10 for r in readers), "ticks flowing")
        # The caught-up streams are served by the workers' broadcasters.
        # (Which worker answers is up to the kernel: ask until the one with the
        # streams does.)
        health = eventually(
            lambda: (h := old.get("/healthz")["streams"])["parked"] and h,
            "a worker with parked streams answers /healthz",
        )
        assert health["broadcaster"] and health["worker_pid"] in old.worker_pids(), health
        signalled = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)
        assert old.proc.wait(15) == 0
        written_when_down = len(writer.ids)
        for reader in readers:
            reader.join(10)
        for n, reader in enumerate(readers):
            assert reader.outcome == "clean", (n, reader.outcome, reader.body[-200:])
            # The stream ended after a whole message, with the notice to reconnect,
            # well before gunicorn's graceful timeout would have cut it.
            assert reader.body.endswith(b"\n\n"), (n, reader.body[-200:])
            assert reader.frames()[-2] == b": shutdown, reconnect", n
            assert reader.ended_at - signalled < 2, n
        # Ticks went on while no server answered; each client resumes on a new one.
        eventually(lambda: len(writer.ids) > written_when_down + 20, "ticks while down", 5)
        new = serve(workers=2, start=how, **config)
        resumed = [
            SSEStream(
                new.base + "/stream?symbols=BTC-USD,AAPL", {"Last-Event-ID": str(r.last_id())}
            )
            for r in readers
        ]
        written_at_resume = len(writer.ids)
        eventually(lambda: len(writer.ids) > written_at_resume + 20, "ticks after resuming", 5)
    finally:
        written = writer.finish()
    assert written
    final = log_ids(db_url)[-1]
    expected = log_ids(db_url, ["BTC-USD", "AAPL"], after=start)
    for reader, stream in zip(readers, resumed, strict=True):
        with stream:
            frames = stream.ticks_until(lambda f: f.id is not None and int(f.id) >= final)
        later = [int(f.id) for f in frames if f.event == "tick" and f.id is not None]
        assert reader.tick_ids() + later == expected  # nothing lost, nothing twice


def test_issue_a_sigterm_while_a_worker_boots_is_not_lost() -> None:
    """A worker had the master's SIGTERM handler until gunicorn installed its own,
    and a SIGTERM in between was dropped: the worker then served on until the
    graceful timeout ran out (10 s) and gunicorn killed it."""
    from types import SimpleNamespace

    from ticker import gunicorn_conf

    worker = SimpleNamespace(alive=True)
    before = signal.getsignal(signal.SIGTERM)
    try:
        gunicorn_conf.post_fork(None, worker)
        os.kill(os.getpid(), signal.SIGTERM)
        eventually(lambda: not worker.alive, "the early SIGTERM noted", timeout=2)
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.server
def test_a_server_stopped_while_its_workers_boot_exits_promptly(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=3, **QUIET)  # answers once one worker is up; the others boot on
    stopped = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    assert time.monotonic() - stopped < 8  # not held up to the 10 s graceful timeout


# ---- a real browser against the limit and across origins ----


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless chromium context (Debian's binary); skip when it is not there."""
    # bypass_csp: the cross-origin test runs its script on a JSON page
    with launch_chromium(tmp_path / "chromium-profile", bypass_csp=True) as context:
        yield context


# Before the page's own script: note what each EventSource the page makes goes through.
RECORD_EVENTSOURCES = """
(() => {
  const Native = window.EventSource;
  window.esLog = [];
  window.esMade = 0;
  window.EventSource = function (url, init) {
    const es = new Native(url, init);
    const n = ++window.esMade;
    const note = (type, extra) =>
      window.esLog.push({ n, type, t: performance.now(), state: es.readyState, ...extra });
    es.addEventListener("open", () => note("open"));
    es.addEventListener("error", () => note("error"));
    es.addEventListener("busy", (e) => note("busy", { retry: JSON.parse(e.data).retry_ms }));
    es.addEventListener("snapshot", () => note("snapshot"));
    return es;
  };
  window.EventSource.prototype = Native.prototype;
  Object.assign(window.EventSource, { CONNECTING: 0, OPEN: 1, CLOSED: 2 });
})();
"""


@pytest.mark.server
@SQLITE_ONLY
def test_a_browser_backs_off_from_busy_and_gets_in_once_a_slot_frees(
    serve: Callable[..., Server], chromium: Any
) -> None:
    server = serve(workers=1, max_streams=1, busy_retry=1, heartbeat=0.3, **QUIET)
    holder = SSEStream(server.base + "/stream?symbols=AAPL")
    next(holder.frames())  # the one slot is taken
    page = chromium.pages[0] if chromium.pages else chromium.new_page()
    page.add_init_script(RECORD_EVENTSOURCES)
    page.goto(f"{server.base}/?symbols=AAPL")

    def log() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = page.evaluate("() => window.esLog")
        return entries

    eventually(lambda: sum(e["type"] == "busy" for e in log()) >= 3, "three busy answers", 20)
    assert page.get_attribute("#conn", "data-state") == "busy"
    entries = log()
    assert {e["n"] for e in entries} == {1}  # the browser's own EventSource kept retrying
    assert all(e["state"] != 2 for e in entries)  # and never gave up (CLOSED)
    busy = [e for e in entries if e["type"] == "busy"]
    opens = [e for e in entries if e["type"] == "open"]
    errors = [e for e in entries if e["type"] == "error"]
    for answer in busy[:2]:
        # The stream ended after the notice; the next attempt came after its long retry.
        ended = next(e for e in errors if e["t"] >= answer["t"])
        again = next(e for e in opens if e["t"] > ended["t"])
        waited = again["t"] - ended["t"]
        assert 1000 <= answer["retry"] <= 2000
        assert answer["retry"] - 50 <= waited <= answer["retry"] + 800, (answer, waited)

    holder.close()  # the slot frees once the server notices (a keepalive write fails)
    eventually(lambda: any(e["type"] == "snapshot" for e in log()), "a snapshot after busy", 20)
    eventually(lambda: page.get_attribute("#conn", "data-state") == "live", "live", 10)
    assert page.evaluate("() => window.esMade") == 1


@pytest.mark.server
@SQLITE_ONLY
def test_a_page_on_an_allowed_origin_streams_and_publishes_across_origins(
    serve: Callable[..., Server], chromium: Any
) -> None:
    port = free_port()
    allowed = f"http://127.0.0.1:{port}"
    server = serve(port=port, **QUIET, cors_origins=allowed)
    server.post_ticks([{"symbol": "AAPL", "price": "230.5"}])
    page = chromium.pages[0] if chromium.pages else chromium.new_page()
    other = f"http://localhost:{port}"  # another origin: another host name, same server
    attempt = """async ([url, token]) => {
        const result = {};
        result.stream = await new Promise((done) => {
          const es = new EventSource(url + "/stream?symbols=AAPL");
          es.addEventListener("snapshot", (e) => { es.close(); done(JSON.parse(e.data).head); });
          es.onerror = () => { if (es.readyState === EventSource.CLOSED) done("refused"); };
        });
        try {
          const answer = await fetch(url + "/api/ticks", {
            method: "POST",
            headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
            body: JSON.stringify({symbol: "AAPL", price: "231.25"}),
          });
          result.publish = [answer.status, answer.headers.get("X-Request-ID") !== null];
        } catch (exc) {
          result.publish = "refused";
        }
        return result;
    }"""
    page.goto(f"{allowed}/healthz")
    assert page.evaluate(attempt, [other, TOKEN]) == {"stream": 1, "publish": [201, True]}
    page.goto(f"{other}/healthz")
    assert page.evaluate(attempt, [allowed, TOKEN]) == {"stream": "refused", "publish": "refused"}
    assert len(log_ids(server.db_url, ["AAPL"])) == 2  # the refused origin wrote nothing
