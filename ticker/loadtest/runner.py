"""The run: open the streams, publish for the measured window, drain, then report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ticker.loadtest.publish import Published, publish
from ticker.loadtest.receive import Received, Stamp, stream_client
from ticker.loadtest.report import make_report


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
    stamp, stop, connected = Stamp(), asyncio.Event(), [0]
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
            asyncio.ensure_future(stream_client(client, host, port, source, stamp, stop, connected))
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
            publish(host, port, token, list(symbols), rate, published)
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
    return make_report(
        population, published, connected[0], connect_seconds, elapsed, received, rate
    )
