"""The receiving side: one asyncio protocol per stream, unframing and checking its events."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast


@dataclass
class Received:
    """What one stream received."""

    symbols: tuple[str, ...]
    start: int | None = None  # id of the snapshot: the client owes every tick after it
    ids: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    error: str | None = None
    last_id: int = 0


class Stamp:
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

    def __init__(self, request: bytes, client: Received, stamp: Stamp) -> None:
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


async def stream_client(
    client: Received,
    host: str,
    port: int,
    source: str | None,
    stamp: Stamp,
    stop: asyncio.Event,
    connected: list[int],
) -> None:
    """Open ``client``'s stream and record what it receives until it closes or is cancelled."""
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


def _frames(client: Received, block: bytes, now: float, stamp: Stamp) -> None:
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
