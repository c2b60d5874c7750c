"""The run: open the streams, publish for the measured window, drain, then report."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ticker.loadtest.publish import Published, Publisher
from ticker.loadtest.receive import Received, Stamp, stream_client
from ticker.loadtest.report import make_report

WATCHLISTS = ("rotating", "random", "shared")


def watchlists(
    kind: str, clients: int, symbols: Sequence[str], per_client: int, seed: int
) -> list[tuple[str, ...]]:
    """Return each client's symbols.

    ``rotating``: client i takes the ``per_client`` symbols from the i-th on;
    ``random``: each its own ``per_client`` drawn at random (reproducible by
    ``seed``); ``shared``: every client the same ``per_client``, spread evenly
    over ``symbols`` (every ``len(symbols) // per_client``-th), so that the
    round-robin publisher's writes carry as many of them as a random
    watchlist's do.
    """
    k = max(1, min(per_client, len(symbols)))
    if kind == "random":
        draw = random.Random(seed)
        return [tuple(draw.sample(list(symbols), k)) for _ in range(clients)]
    if kind == "shared":
        step = len(symbols) // k
        return [tuple(symbols[i * step] for i in range(k))] * clients
    if kind == "rotating":
        return [tuple(symbols[(i + j) % len(symbols)] for j in range(k)) for i in range(clients)]
    raise ValueError(f"unknown watchlists {kind!r}: one of {', '.join(WATCHLISTS)}")


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
    kind: str = "rotating",
    seed: int = 0,
    batch: int = 0,
) -> dict[str, Any]:
    """Run the load and return the report; ``on_phase(name)`` marks the measured window.

    ``kind``, ``seed``: the clients' watchlists (:func:`watchlists`);
    ``batch``: ticks per ``POST`` (:func:`~ticker.loadtest.publish.publish`).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    publisher = None
    if rate > 0:
        if not token:
            raise ValueError("publishing needs a token (--token or TICKER_PUBLISH_TOKEN)")
        publisher = Publisher(host, port, token, symbols, rate, batch)
    stamp, stop, connected = Stamp(), asyncio.Event(), [0]
    population = [Received(w) for w in watchlists(kind, clients, symbols, per_client, seed)]
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
    if on_phase:
        on_phase("measure-start")
    measure_from = time.monotonic()
    if publisher is not None:
        publisher.start(duration)
    received_before = sum(len(c.ids) for c in population)
    await asyncio.sleep(duration)
    if publisher is not None:  # the publish in flight at the end gets its answer
        published = await publisher.result(timeout=15)
    elapsed = time.monotonic() - measure_from
    received = sum(len(c.ids) for c in population) - received_before
    if on_phase:
        on_phase("measure-end")

    # Drain: every connected client should receive the last tick published of its symbols.
    newest: dict[str, int] = {}
    for tick_id, symbol in published.ids.items():
        newest[symbol] = max(tick_id, newest.get(symbol, 0))
    owed = [(c, max((newest.get(s, 0) for s in c.symbols), default=0)) for c in population]
    drain_end = time.monotonic() + 10
    while time.monotonic() < drain_end and any(
        c.error is None and c.start is not None and c.last_id < last for c, last in owed
    ):
        await asyncio.sleep(0.05)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return make_report(
        population, published, connected[0], connect_seconds, elapsed, received, rate
    )
