"""``ticker loadtest``: many concurrent SSE clients and a publisher against any deployment.

One asyncio process opens N streams (spread over several local source
addresses when asked, to get past one address's ~28,000 ports), optionally
publishes ticks at a fixed rate through ``POST /api/ticks``, and checks every
client's ids against what was published: loss, duplicates and reordering
must all be zero.  Latency is publish-to-receive: the publisher stamps each
tick's ``ts`` with its send time, and clients subtract it from the arrival
time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

from ticker.events import format_ts


@dataclass
class Received:
    """What one stream received."""

    symbols: tuple[str, ...]
    start: int | None = None  # id of the snapshot: the client owes every tick after it
    ids: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    error: str | None = None
    last_id: int = 0


@dataclass
class Published:
    """What the publisher appended: id → symbol, in id order."""

    ids: dict[int, str] = field(default_factory=dict)
    errors: int = 0


class _Stamp:
    """Turn the ``ts`` strings the publisher wrote back into epoch seconds, once each."""

    def __init__(self) -> None:
        self.cache: dict[str, float] = {}

    def __call__(self, raw: str) -> float:
        value = self.cache.get(raw)
        if value is None:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
            if len(self.cache) > 100_000:
                self.cache.clear()
            self.cache[raw] = value
        return value


class _Receiver(asyncio.Protocol):
    """One stream's connection: check the response head, then unframe its chunks into frames.

    A protocol rather than asyncio streams: one callback per read instead of
    several awaits per chunk keeps one load process ahead of 100,000 events a
    second.
    """

    def __init__(self, request: bytes, client: Received, stamp: _Stamp) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.client = client
        self.stamp = stamp
        self.head: asyncio.Future[None] = loop.create_future()  # the response head was a stream
        self.closed: asyncio.Future[None] = loop.create_future()
        self.in_body = False
        self.buffer = b""  # received, not yet unframed
        self.pending = b""  # unframed, not yet a whole frame

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def _refuse(self, reason: str) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError(reason))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.in_body:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            head, buffer = buffer[:end].lower(), buffer[end + 4 :]
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                return self._refuse(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            if b"\r\ntransfer-encoding: chunked" not in head:
                return self._refuse("expected a chunked event stream")
            self.in_body = True
            self.head.set_result(None)
        pos, body = 0, []
        while (eol := buffer.find(b"\r\n", pos)) >= 0:
            size = int(buffer[pos:eol], 16)
            if size == 0:  # the server ended the stream
                self.transport.close()
                break
            if eol + size + 4 > len(buffer):
                break
            body.append(buffer[eol + 2 : eol + 2 + size])
            pos = eol + size + 4
        self.buffer = buffer[pos:]
        if body:
            pending = self.pending + b"".join(body)
            cut = pending.rfind(b"\n\n")
            if cut >= 0:
                _frames(self.client, pending[: cut + 2], time.time(), self.stamp)
                pending = pending[cut + 2 :]
            self.pending = pending

    def connection_lost(self, exc: Exception | None) -> None:
        self._refuse(str(exc) if exc else "closed before the response")
        if not self.closed.done():  # cancelled when the run ends first
            self.closed.set_result(None)


async def _client(
    client: Received,
    host: str,
    port: int,
    source: str | None,
    stamp: _Stamp,
    stop: asyncio.Event,
    connected: list[int],
) -> None:
    path = "/stream?symbols=" + ",".join(client.symbols)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    local = (source, 0) if source else None
    loop = asyncio.get_running_loop()
    try:
        transport, receiver = await loop.create_connection(
            lambda: _Receiver(request.encode(), client, stamp), host, port, local_addr=local
        )
        await receiver.head
    except (OSError, ConnectionError) as exc:
        client.error = str(exc) or type(exc).__name__
        return
    connected[0] += 1
    try:
        await receiver.closed
        if not stop.is_set():
            client.error = "the server ended the stream"
    finally:
        transport.close()


# Whole frames are scanned with regular expressions rather than line by line,
# so that one load process can check hundreds of thousands of events a second.
_TICK = re.compile(rb'(?m)^id: (\d+)\nevent: tick\ndata: [^\n]*?"ts":"([^"]+)"')
_OPENING = re.compile(rb"(?m)^id: (\d+)\nevent: (?:snapshot|reset)$")


def _frames(client: Received, block: bytes, now: float, stamp: _Stamp) -> None:
    """Record the ticks, resume point and opening id found in ``block`` (whole frames)."""
    if client.start is None:
        opening = _OPENING.search(block)
        if opening is not None:
            client.start = int(opening[1])
    for match in _TICK.finditer(block):
        client.ids.append(int(match[1]))
        client.latencies.append(now - stamp(match[2].decode()))
    at = block.rfind(b"id: ")
    while at > 0 and block[at - 1] != 10:  # an "id: " inside data, not at a line start
        at = block.rfind(b"id: ", 0, at)
    if at >= 0:
        client.last_id = int(block[at + 4 : block.index(b"\n", at)])


async def _publisher(
    host: str,
    port: int,
    token: str,
    symbols: Sequence[str],
    rate: float,
    published: Published,
) -> None:
    """Publish ``rate`` ticks a second, round-robin over ``symbols``, until cancelled."""
    reader, writer = await asyncio.open_connection(host, port)
    interval, n, started = 1.0 / rate, 0, time.monotonic()
    while True:
        due = started + n * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        count = max(1, int((time.monotonic() - due) / interval) + 1)  # catch up in one batch
        ts = format_ts(time.time_ns() // 1000)
        batch = [
            {
                "symbol": symbols[(n + i) % len(symbols)],
                "price": f"{100 + (n + i) % 997}.25",
                "ts": ts,
            }
            for i in range(count)
        ]
        body = json.dumps(batch).encode()
        writer.write(
            f"POST /api/ticks HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        answer = await reader.readexactly(length)
        if b" 201 " in status:
            for i, tick_id in enumerate(json.loads(answer)["ids"]):
                published.ids[tick_id] = batch[i]["symbol"]
        else:
            published.errors += 1
        n += count


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


async def run(
    url: str,
    clients: int,
    symbols: Sequence[str],
    per_client: int,
    duration: float,
    rate: float,
    token: str | None,
    sources: Sequence[str],
    connect_rate: float,
    on_phase: Any = None,
) -> dict[str, Any]:
    """Run the load and return the report; ``on_phase(name)`` marks the measured window."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stamp, stop, connected = _Stamp(), asyncio.Event(), [0]
    population = [
        Received(
            tuple(symbols[(i + k) % len(symbols)] for k in range(min(per_client, len(symbols))))
        )
        for i in range(clients)
    ]
    tasks = []
    opened_at = time.monotonic()
    for i, client in enumerate(population):
        source = sources[i % len(sources)] if sources else None
        tasks.append(
            asyncio.ensure_future(_client(client, host, port, source, stamp, stop, connected))
        )
        if connect_rate and i % 100 == 99:
            await asyncio.sleep(100 / connect_rate)
    while connected[0] + sum(c.error is not None for c in population) < clients:
        if time.monotonic() - opened_at > 120:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # let the last snapshots arrive before anything is published
    connect_seconds = time.monotonic() - opened_at

    published = Published()
    publisher = None
    if rate > 0:
        if not token:
            raise ValueError("publishing needs a token (--token or TICKER_PUBLISH_TOKEN)")
        publisher = asyncio.ensure_future(
            _publisher(host, port, token, list(symbols), rate, published)
        )
    if on_phase:
        on_phase("measure-start")
    measure_from = time.monotonic()
    received_before = sum(len(c.ids) for c in population)
    await asyncio.sleep(duration)
    if publisher is not None:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
    elapsed = time.monotonic() - measure_from
    received = sum(len(c.ids) for c in population) - received_before
    if on_phase:
        on_phase("measure-end")

    # Drain: every connected client should catch up with the last published id.
    last = max(published.ids, default=0)
    drain_end = time.monotonic() + 10
    while time.monotonic() < drain_end and any(
        c.error is None and c.start is not None and c.last_id < last for c in population
    ):
        await asyncio.sleep(0.05)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return _report(population, published, connected[0], connect_seconds, elapsed, received, rate)


def _report(
    population: list[Received],
    published: Published,
    connected: int,
    connect_seconds: float,
    elapsed: float,
    received: int,
    rate: float,
) -> dict[str, Any]:
    lost = duplicated = reordered = 0
    by_symbol: dict[str, list[int]] = {}
    for tick_id, symbol in sorted(published.ids.items()):
        by_symbol.setdefault(symbol, []).append(tick_id)
    owed_cache: dict[tuple[tuple[str, ...], int], set[int]] = {}
    for client in population:
        if client.start is None:
            continue
        got = client.ids
        duplicated += len(got) - len(set(got))
        reordered += sum(1 for a, b in itertools.pairwise(got) if b < a)
        key = (client.symbols, client.start)
        if key not in owed_cache:
            owed_cache[key] = {i for s in key[0] for i in by_symbol.get(s, []) if i > key[1]}
        lost += len(owed_cache[key] - set(got))
    latencies = sorted(x for c in population for x in c.latencies)
    errors = [c.error for c in population if c.error]
    return {
        "clients": len(population),
        "connected": connected,
        "failed": len(errors),
        "first_error": errors[0] if errors else None,
        "connect_seconds": round(connect_seconds, 2),
        "published": len(published.ids),
        "publish_errors": published.errors,
        "publish_rate": rate,
        "events_received": received,
        "events_per_second": round(received / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            name: None if v is None else round(v * 1000, 2)
            for name, v in (
                ("p50", _percentile(latencies, 0.50)),
                ("p90", _percentile(latencies, 0.90)),
                ("p99", _percentile(latencies, 0.99)),
                ("max", latencies[-1] if latencies else None),
            )
        },
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
    }


def render(report: dict[str, Any]) -> str:
    """Format the report as a readable table."""
    latency = report["latency_ms"]
    rows = [
        ("clients connected / failed", f"{report['connected']} / {report['failed']}"),
        ("time to connect all", f"{report['connect_seconds']} s"),
        ("ticks published (errors)", f"{report['published']} ({report['publish_errors']})"),
        ("events delivered", f"{report['events_received']}"),
        ("events/s delivered", f"{report['events_per_second']}"),
        *((f"latency {k}", "-" if v is None else f"{v} ms") for k, v in latency.items()),
        (
            "lost / duplicated / reordered",
            f"{report['lost']} / {report['duplicated']} / {report['reordered']}",
        ),
    ]
    if report["first_error"]:
        rows.append(("first error", report["first_error"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
