"""Single-tick ``POST /api/ticks`` as fast as a server answers: the client of ``--only posts``.

``docs/benchmark.py`` runs it pinned to core 1 against a server pinned to core 0:
``benchmark_posts.py PORT --token T --connections 32 --duration 20``.  Each of the
keep-alive HTTP/1.1 connections sends one request, waits for its answer, and
sends the next (a closed loop, as a producer posting trades one by one does),
all on one asyncio loop with raw sockets, so the client costs little per
request.  It prints one JSON line: requests/s, latency percentiles, and the
client's own CPU use in the window (near 100 % would mean the client, not the
server, set the pace).  Only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

BODY = json.dumps(
    {"symbol": "BTC-USD", "price": "67012.35", "ts": "2026-12-03T09:00:00.000000Z"}
).encode()


def request(port: int, token: str) -> bytes:
    return (
        f"POST /api/ticks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


class Window:
    """The measured window: latencies and answers between ``start`` and ``end``."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}


async def connection(port: int, payload: bytes, window: Window, stop: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            sent = time.perf_counter()
            if sent >= stop:
                return
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done = time.perf_counter()
            if window.start <= sent and done <= window.end:
                window.latencies.append(done - sent)
                window.statuses[status] = window.statuses.get(status, 0) + 1
                if status != 201:
                    window.errors += 1
    finally:
        writer.close()


async def run(port: int, token: str, connections: int, warmup: float, duration: float) -> Any:
    now = time.perf_counter()
    window = Window(now + warmup, now + warmup + duration)
    payload = request(port, token)
    cpu: dict[str, float] = {}

    async def mark() -> None:
        await asyncio.sleep(window.start - time.perf_counter())
        cpu["start"] = sum(os.times()[:2])
        await asyncio.sleep(window.end - time.perf_counter())
        cpu["end"] = sum(os.times()[:2])

    await asyncio.gather(
        mark(), *(connection(port, payload, window, window.end) for _ in range(connections))
    )
    latencies = sorted(window.latencies)

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "requests/s": round(len(latencies) / duration),
        "p50 ms": pct(0.50),
        "p99 ms": pct(0.99),
        "max ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "errors": window.errors,
        "statuses": window.statuses,
        "client CPU %": round((cpu["end"] - cpu["start"]) / duration * 100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--token", default="")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.port, args.token, args.connections, args.warmup, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
