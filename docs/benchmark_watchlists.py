"""The watchlists figures of docs/benchmarks.md: every stream its own symbols.

Run through ``docs/benchmark.py --only watchlists``, with that file's method:
one gunicorn gevent worker (``ticker serve``) pinned to core 0, ``ticker
loadtest`` pinned to core 1, server CPU from /proc of the server's processes
in the measured window.  500 symbols; 1,000 ticks/s posted in batches of 20,
round-robin over the 500; N streams of 10 symbols each, either each its own
random watchlist (``--watchlists random``) or all the same 10
(``--watchlists shared``, every 50th symbol, so that each batch of 20
consecutive symbols carries as many of them as of a random watchlist: the
same deliveries in both cases).  Figures per N: server CPU µs per delivered
event, p99 latency, publishes planned and made, lost/dup/reordered (plus
ticks of other symbols), and random ÷ shared; and how busy the server and
the load client (with its publisher process) were in the window, in % of one
core, to tell a saturated server from a saturated client or a busy machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYMBOLS = [f"S{n:03d}" for n in range(500)]
RATE, BATCH, PER_CLIENT = 1000, 20, 10


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def load_cpu_seconds() -> float:
    """CPU time of the running ``ticker loadtest`` (and its publisher process), if any."""
    total = 0.0
    for pid in _children(os.getpid()):
        try:
            if b"loadtest" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            total += _cpu_seconds(pid) + sum(_cpu_seconds(c) for c in _children(pid))
        except OSError:
            continue
    return total


def measure(
    server: Any, loadtest: Callable[..., dict[str, Any]], kind: str, clients: int, duration: float
) -> dict[str, Any]:
    """One load against a fresh server: ``clients`` streams with ``kind`` watchlists."""
    cpu: dict[str, tuple[float, float, float]] = {}  # phase → server, load client, clock

    def window(phase: str) -> None:
        cpu[phase] = (server.cpu_seconds(), load_cpu_seconds(), time.monotonic())

    try:
        report = loadtest(
            server,
            on_window=window,
            clients=clients,
            symbols=",".join(SYMBOLS),
            per_client=PER_CLIENT,
            watchlists=kind,
            seed=clients,
            rate=RATE,
            batch=BATCH,
            duration=duration,
        )
    finally:
        server.stop()
    (server_a, load_a, clock_a), (server_b, load_b, clock_b) = (
        cpu["measure-start"],
        cpu["measure-end"],
    )
    spent, seconds = server_b - server_a, clock_b - clock_a
    events = report["events_received"]
    return {
        "streams": clients,
        "watchlists": kind,
        "connected": report["connected"],
        "events/s": report["events_per_second"],
        "server CPU µs/event": round(spent / events * 1e6, 1) if events else None,
        "p50 ms": report["latency_ms"]["p50"],
        "p99 ms": report["latency_ms"]["p99"],
        "publishes made/planned": f"{report['publishes_made']}/{report['publishes_planned']}",
        "POST p99 ms": report["publish_answer_ms"]["p99"],
        "server CPU %": round(100 * spent / seconds),
        "load client CPU %": round(100 * (load_b - load_a) / seconds),
        "lost/dup/reordered/other": "/".join(
            str(report[k]) for k in ("lost", "duplicated", "reordered", "unexpected")
        ),
    }


def run(
    tmp: Path,
    quick: bool,
    make_server: Callable[[str], Any],
    loadtest: Callable[..., dict[str, Any]],
    show: Callable[[str, list[dict[str, Any]]], None],
) -> list[dict[str, Any]]:
    """Measure shared then random watchlists for each count of streams; print the table.

    ``make_server(name)`` starts ``ticker serve`` on a fresh SQLite log
    tracking ``SYMBOLS``.
    """
    duration = 10 if quick else 30
    counts = (1000, 3000) if quick else (1000, 3000, 5000)
    rows = []
    for clients in counts:
        shared = measure(make_server("watchlists"), loadtest, "shared", clients, duration)
        mine = measure(make_server("watchlists"), loadtest, "random", clients, duration)
        for figure in ("server CPU µs/event", "p99 ms"):
            a, b = mine[figure], shared[figure]
            ratio = round(a / b, 2) if a and b else None
            shared[f"{figure} random ÷ shared"] = None
            mine[f"{figure} random ÷ shared"] = ratio
        rows += [shared, mine]
        show(f"Watchlists so far ({clients} streams done)", rows[-2:])
    show(
        "Watchlists: 500 symbols, 1,000 ticks/s in POSTs of 20, 10 symbols a stream "
        "(1 worker on core 0; client on core 1)",
        rows,
    )
    return rows
