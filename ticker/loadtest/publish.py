"""The publishing side: ticks at a fixed rate through ``POST /api/ticks``, stamped when sent.

It runs in a process of its own (:class:`Publisher`): in the streams' event
loop, a load client busy reading would delay the publishes, and the report
would blame the server for it.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from ticker.events import format_ts


@dataclass
class Published:
    """What the publisher appended (id → symbol, in id order), and what it had planned to.

    A publish is one ``POST``.  ``planned`` counts the publishes that fell due
    while the publisher ran, ``made`` those the server answered ``201``: fewer
    made than planned means the server could not keep up with the rate.
    """

    ids: dict[int, str] = field(default_factory=dict)
    errors: int = 0
    planned: int = 0
    made: int = 0
    ticks_planned: int = 0
    answered_in: list[float] = field(default_factory=list)  # seconds, each POST to its answer


class Publisher:
    """The publisher in a process of its own, started ahead and told when to begin."""

    def __init__(
        self, host: str, port: int, token: str, symbols: Sequence[str], rate: float, batch: int
    ) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a running event loop
        self._conn, theirs = context.Pipe()
        args = (theirs, host, port, token, list(symbols), rate, batch)
        self._process = context.Process(target=_publish_alone, args=args, daemon=True)
        self._process.start()
        self._conn.recv()  # ready: its start-up stays out of the measured window

    def start(self, duration: float) -> None:
        """Start publishing for ``duration`` seconds from now."""
        self._conn.send(duration)

    async def result(self, timeout: float) -> Published:
        """Wait for what it published (the last publish's answer included)."""
        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(None, self._conn.poll, timeout)
        published: Published = self._conn.recv() if done else Published(errors=1)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        return published


def _publish_alone(
    conn: Connection,
    host: str,
    port: int,
    token: str,
    symbols: list[str],
    rate: float,
    batch: int,
) -> None:
    conn.send("ready")
    duration = conn.recv()
    published = Published()
    try:
        until = time.monotonic() + duration
        asyncio.run(publish(host, port, token, symbols, rate, published, until, batch))
    except OSError:
        published.errors += 1
    finally:
        conn.send(published)


async def publish(
    host: str,
    port: int,
    token: str,
    symbols: Sequence[str],
    rate: float,
    published: Published,
    until: float,
    batch: int = 0,
) -> None:
    """Publish ``rate`` ticks a second, round-robin over ``symbols``, until ``until`` (monotonic).

    ``batch``: ticks per ``POST``, one ``POST`` due every ``batch / rate``
    seconds; one that falls due while the previous is still waiting for its
    answer goes out as soon as that is back, so a server that cannot keep up
    shows as fewer publishes made than planned.  ``0``: one tick per ``POST``,
    and the ticks that fell due meanwhile go together in the next one (each
    counts as a publish made).
    """
    reader, writer = await asyncio.open_connection(host, port)
    per_post = max(1, batch)
    interval, started = per_post / rate, time.monotonic()
    published.planned = max(1, math.ceil((until - started) / interval))
    published.ticks_planned = published.planned * per_post
    sent = 0  # publishes sent (or, merged, stood for)
    try:
        while sent < published.planned:
            due = started + sent * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif time.monotonic() >= until:  # behind at the end: what is left was not made
                break
            if batch:
                count = slots = batch
            else:  # catch up in one POST
                late = int((time.monotonic() - due) / interval) + 1
                count = slots = max(1, min(late, published.planned - sent))
            ts = format_ts(time.time_ns() // 1000)
            first = sent * per_post
            ticks = [
                {
                    "symbol": symbols[(first + i) % len(symbols)],
                    "price": f"{100 + (first + i) % 997}.25",
                    "ts": ts,
                }
                for i in range(count)
            ]
            sent += 1 if batch else slots
            if await _post(reader, writer, host, port, token, ticks, published):
                published.made += 1 if batch else slots
    finally:
        writer.close()


async def _post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    token: str,
    ticks: list[dict[str, str]],
    published: Published,
) -> bool:
    """Send one ``POST``; record the ids it got; tell whether it was appended."""
    body = json.dumps(ticks).encode()
    sent_at = time.monotonic()
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
    published.answered_in.append(time.monotonic() - sent_at)
    if b" 201 " not in status:
        published.errors += 1
        return False
    for i, tick_id in enumerate(json.loads(answer)["ids"]):
        published.ids[tick_id] = ticks[i]["symbol"]
    return True
