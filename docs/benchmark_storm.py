"""The reconnect storm of a deploy, for ``docs/benchmark.py --only storm``.

Thousands of streams are open on ``ticker serve`` (2 workers) while ticks are
posted; the server gets SIGTERM and a new one starts on the same port.  Each
client behaves like a browser's EventSource: when its stream ends it waits
the ``retry:`` the server gave it (1 to 5 s, jittered per connection), then
reconnects with ``Last-Event-ID``, again after the same delay while nothing
listens.  Measured:

- how long after its stream ended each client was live again (its ``live``
  marker, or its first tick), and how much later than it could have been: its
  retry delay, or the moment the new server first answered when that is later;
- the longest a publish waited for its answer (``POST /api/ticks``, one tick
  each, sent on schedule; the seconds no server listened are given apart);
- every client's tick ids against the log: lost, duplicated, reordered, resets.

The client side runs in one process of its own (``run_client``, asyncio, raw
HTTP/1.0 so bodies are not chunked) over several 127.0.0.x source addresses.
Only ever talks to 127.0.0.1 and the local PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYMBOLS = [f"S{n:03d}" for n in range(50)]  # each client watches one of them
RATE = 50  # ticks posted per second, one per POST, round-robin over SYMBOLS
_TICK = re.compile(rb"(?m)^id: (\d+)\nevent: tick$")
_ID = re.compile(rb"(?m)^id: (\d+)$")
_RETRY = re.compile(rb"(?m)^retry: (\d+)$")


class Client:
    """One EventSource-like stream: what it received, and when it was cut off and back."""

    def __init__(self, symbol: str, source: str) -> None:
        self.symbol = symbol
        self.source = source
        self.start: int | None = None  # the first snapshot's head
        self.last_id: int | None = None  # what a browser would send as Last-Event-ID
        self.retry = 3.0
        self.ids: list[int] = []
        self.resets = 0
        self.busy = 0
        self.live = asyncio.Event()  # set when the current stream is caught up
        self.cut_at: float | None = None  # when the stream the deploy ended closed
        self.cut_retry = 0.0
        self.back_at: float | None = None  # when it was live again after that
        self.tried_at = 0.0  # when the current connection was attempted
        self.reconnect_s: float | None = None  # from the attempt that got through to live

    def frames(self, block: bytes, now: float) -> None:
        """Take whole frames from the stream."""
        if self.start is None and b"event: snapshot" in block:
            match = _ID.search(block)
            assert match is not None
            self.start = int(match[1])
        self.ids += [int(m[1]) for m in _TICK.finditer(block)]
        self.resets += block.count(b"event: reset")
        self.busy += block.count(b"event: busy")
        for match in _RETRY.finditer(block):
            self.retry = int(match[1]) / 1000
        ids = _ID.findall(block)
        if ids:
            self.last_id = int(ids[-1])
        if not self.live.is_set() and (
            b"event: live" in block or b"event: snapshot" in block or b"event: tick" in block
        ):
            self.live.set()
            if self.cut_at is not None and self.back_at is None:
                self.back_at, self.reconnect_s = now, now - self.tried_at


class _Stream(asyncio.Protocol):
    def __init__(self, client: Client, request: bytes) -> None:
        self.client = client
        self.request = request
        self.buffer = b""
        self.head_done = False
        self.ended = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        block = self.buffer + data
        if not self.head_done:
            end = block.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = block
                return
            self.head_done, block = True, block[end + 4 :]
        cut = block.rfind(b"\n\n")
        if cut < 0:
            self.buffer = block
            return
        self.buffer = block[cut + 2 :]
        self.client.frames(block[: cut + 2], time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


async def follow(client: Client, port: int, stop: asyncio.Event, deploy: asyncio.Event) -> None:
    """Keep ``client``'s stream open like EventSource until ``stop``."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        headers = f"Last-Event-ID: {client.last_id}\r\n" if client.last_id is not None else ""
        request = (
            f"GET /stream?symbols={client.symbol} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
            f"Accept: text/event-stream\r\n{headers}\r\n"
        ).encode()
        client.live.clear()
        client.tried_at = time.monotonic()
        try:
            transport, stream = await loop.create_connection(
                lambda r=request: _Stream(client, r),  # type: ignore[misc]
                "127.0.0.1",
                port,
                local_addr=(client.source, 0),
            )
        except OSError:
            stream = None
        if stream is not None:
            done = asyncio.ensure_future(stop.wait())
            await asyncio.wait([stream.ended, done], return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            transport.close()
            if stop.is_set():
                return
        if deploy.is_set() and client.cut_at is None:
            client.cut_at, client.cut_retry = time.monotonic(), client.retry
        await asyncio.sleep(client.retry)  # a browser waits the retry: it was given


async def post(port: int, body: bytes, token: str) -> tuple[int, float]:
    """POST one tick on a new connection; return the status and the seconds it took."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST /api/ticks HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status = int((await reader.readline()).split()[1])
        await reader.read()
    finally:
        writer.close()
    return status, time.monotonic() - began


async def publish(port: int, token: str, stop: asyncio.Event, out: dict[str, Any]) -> None:
    """Post RATE ticks a second, each retried until it is answered; record how long each took."""
    n, refused_for = 0, 0.0
    waits: list[tuple[float, float]] = []  # how long each took, and when it was sent
    began = time.monotonic()
    while not stop.is_set():
        due = began + n / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        body = json.dumps({"symbol": SYMBOLS[n % len(SYMBOLS)], "price": f"{100 + n % 7}.5"})
        while True:
            try:
                status, took = await post(port, body.encode(), token)
            except (OSError, IndexError, ValueError):  # nothing listens: the deploy's gap
                refused_for += 0.02
                await asyncio.sleep(0.02)
                continue
            if status == 201:
                waits.append((took, time.monotonic() - took))
                break
            await asyncio.sleep(0.02)
        n += 1
    out.update(published=n, waits=waits, refused_s=round(refused_for, 2))


async def deploy_times() -> tuple[float, float, float]:
    """Read from the caller when it sent SIGTERM, the old server exited and the new one answered.

    (``time.monotonic`` is the system's monotonic clock: the same in both processes.)
    """
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    signalled, exited, up = (float(x) for x in line.split())
    return signalled, exited, up


def _percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None


async def storm(args: dict[str, Any]) -> dict[str, Any]:
    port, n = args["port"], args["clients"]
    sources = [f"127.0.0.{2 + i}" for i in range(4)]
    clients = [Client(SYMBOLS[i % len(SYMBOLS)], sources[i % len(sources)]) for i in range(n)]
    stop, deploy, publish_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks = []
    for i, client in enumerate(clients):
        tasks.append(asyncio.ensure_future(follow(client, port, stop, deploy)))
        if i % 500 == 499:
            await asyncio.sleep(0.5)  # 1,000 new streams a second
    opened = time.monotonic()
    while sum(c.live.is_set() for c in clients) < n and time.monotonic() - opened < 120:
        await asyncio.sleep(0.1)
    published: dict[str, Any] = {}
    publisher = asyncio.ensure_future(publish(port, args["token"], publish_stop, published))
    await asyncio.sleep(3)
    deploy.set()
    print("phase: deploy", file=sys.stderr, flush=True)  # the caller stops and restarts
    signalled, exited, up = await deploy_times()
    end = time.monotonic() + 60
    while sum(c.back_at is not None for c in clients) < n and time.monotonic() < end:
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # live for a while on the new server
    publish_stop.set()
    await publisher
    last = {s: 0 for s in SYMBOLS}
    for client in clients:
        if client.ids:
            last[client.symbol] = max(last[client.symbol], client.ids[-1])
    drain_end = time.monotonic() + 15
    while time.monotonic() < drain_end and any(
        (c.ids[-1] if c.ids else 0) < last[c.symbol] for c in clients
    ):
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)

    backs = [c.back_at - c.cut_at for c in clients if c.back_at and c.cut_at]
    late = [c.back_at - (c.cut_at + c.cut_retry) for c in clients if c.back_at and c.cut_at]
    reconnects = [c.reconnect_s for c in clients if c.reconnect_s is not None]
    longest = max(published["waits"], default=(0.0, signalled))
    return {
        "clients": clients,
        "report": {
            "streams": n,
            "back live": f"{len(backs)}/{n}",
            "back p50 s": _percentile(backs, 0.5),
            "back p99 s": _percentile(backs, 0.99),
            "beyond retry p99 s": _percentile(late, 0.99),
            "attempt to live p99 s": _percentile(reconnects, 0.99),
            "old exits s": round(exited - signalled, 2),
            "no server s": round(max(0.0, up - exited), 2),
            "publishes": published["published"],
            "longest POST s": round(longest[0], 3),
            "at s": round(longest[1] - signalled, 1),  # when it was sent, after SIGTERM
            "POST p99 s": _percentile([took for took, _ in published["waits"]], 0.99),
            "busy": sum(c.busy for c in clients),
        },
    }


def check(clients: list[Client], db_url: str) -> dict[str, int]:
    """Compare what each client received with the log: lost, duplicated, reordered, resets."""
    from sqlalchemy import text

    from ticker.db import make_engine

    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, symbol FROM ticks ORDER BY id")).all()
    engine.dispose()
    by_symbol: dict[str, list[int]] = {}
    for row_id, symbol in rows:
        by_symbol.setdefault(symbol, []).append(int(row_id))
    lost = dup = reordered = 0
    for c in clients:
        got = c.ids
        dup += len(got) - len(set(got))
        reordered += sum(1 for a, b in itertools.pairwise(got) if b <= a)
        upto = got[-1] if got else 0
        wanted = [i for i in by_symbol.get(c.symbol, []) if (c.start or 0) < i <= upto]
        lost += len(set(wanted) - set(got))
    return {
        "lost": lost,
        "duplicated": dup,
        "reordered": reordered,
        "resets": sum(c.resets for c in clients),
    }


def run_client(args: dict[str, Any]) -> None:
    """The client process: the storm, then the check; one JSON line on stdout."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(storm(args))
    report = result["report"]
    report.update(check(result["clients"], args["db_url"]))
    print(json.dumps(report))


def run(
    tmp: Path,
    quick: bool,
    sqlite_url: Callable[[Path, str], str],
    postgres_url: Callable[[str], str | None],
    make_server: Callable[..., Any],
    python: str,
    token: str,
    show: Callable[[str, list[dict[str, Any]]], None],
) -> None:
    """Run the storm for 5,000 and 10,000 streams (1,000 and 2,000 quick) on both databases."""
    rows = []
    for n in (1000, 2000) if quick else (5000, 10000):
        for name in ("sqlite", "postgresql"):
            for deploy in ("restart", "overlap"):
                url = sqlite_url(tmp, "storm") if name == "sqlite" else postgres_url("storm")
                if url is None:
                    continue
                got = one_storm(url, n, deploy, make_server, python, token)
                rows.append({"database": name, "deploy": deploy, **got})
    show("Reconnect storm: SIGTERM and a restart on the same port (2 workers, whole machine)", rows)


def answering(server: Any, timeout: float = 60) -> None:
    """Wait until each worker of ``server`` has answered ``/healthz`` on the shared port.

    (With two servers on one port, the old one's answers say nothing of the new.)
    """
    waiting, end = set(server.workers()), time.monotonic() + timeout
    while waiting and time.monotonic() < end:
        waiting.discard(server.get_json("/healthz")["streams"]["worker_pid"])
    if waiting:
        raise RuntimeError(f"workers {sorted(waiting)} never answered")


def one_storm(
    db_url: str,
    clients: int,
    deploy: str,
    make_server: Callable[..., Any],
    python: str,
    token: str,
) -> dict[str, Any]:
    """One storm.  ``deploy``: ``restart`` sends SIGTERM, waits for the old server to exit,
    then starts the new one; ``overlap`` starts the new one first on the same port
    (``GUNICORN_CMD_ARGS=--reuse-port``, both servers), then sends the old SIGTERM.
    """
    config = {"symbols": ",".join(SYMBOLS), "max_streams": 20000, "workers": 2, "cpus": None}
    if deploy == "overlap":
        os.environ["GUNICORN_CMD_ARGS"] = "--reuse-port"
    try:
        server = make_server(db_url=db_url, **config)
    finally:
        os.environ.pop("GUNICORN_CMD_ARGS", None)
    args = {"port": server.port, "clients": clients, "token": token, "db_url": db_url}
    here = Path(__file__).resolve().parent
    code = f"import sys; sys.path.insert(0, {str(here)!r}); import benchmark_storm as b; "
    code += f"b.run_client({args!r})"
    proc = subprocess.Popen(
        [python, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    new = None
    try:
        for line in proc.stderr:
            if line.startswith("phase: deploy") and deploy == "restart":
                signalled = time.monotonic()
                server.stop()
                exited = time.monotonic()
                new = make_server(db_url=db_url, port=server.port, **config)
                up = time.monotonic()
            elif line.startswith("phase: deploy"):
                os.environ["GUNICORN_CMD_ARGS"] = "--reuse-port"
                try:
                    new = make_server(db_url=db_url, port=server.port, **config)
                finally:
                    os.environ.pop("GUNICORN_CMD_ARGS", None)
                answering(new)
                signalled = up = time.monotonic()
                server.stop()
                exited = time.monotonic()
            if line.startswith("phase: deploy"):
                proc.stdin.write(f"{signalled} {exited} {up}\n")
                proc.stdin.flush()
                break
            print(f"  (storm client: {line.rstrip()})", file=sys.stderr)
        out = proc.stdout.read()
        proc.wait()
    finally:
        (new or server).stop()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"the storm client failed: {proc.stderr.read()[-2000:]}")
    return dict(json.loads(out))
