"""The publishing side: ticks at a fixed rate through ``POST /api/ticks``, stamped when sent."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ticker.events import format_ts


@dataclass
class Published:
    """What the publisher appended: id → symbol, in id order."""

    ids: dict[int, str] = field(default_factory=dict)
    errors: int = 0


async def publish(
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
