"""The report: loss, duplicates, reordering and latency, as a dict and as a table."""

from __future__ import annotations

import itertools
import math
from typing import Any

from ticker.loadtest.publish import Published
from ticker.loadtest.receive import Received


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def make_report(
    population: list[Received],
    published: Published,
    connected: int,
    connect_seconds: float,
    elapsed: float,
    received: int,
    rate: float,
) -> dict[str, Any]:
    """Check every client's ids against what was published, and sum up delivery and latency.

    Each client is owed every published tick of its own symbols after its
    snapshot: one missing is *lost*, one received twice *duplicated*, one
    received after a larger id *reordered*, and one published for another
    symbol (or at or before its snapshot) *unexpected*.
    """
    lost = duplicated = reordered = unexpected = 0
    by_symbol: dict[str, list[int]] = {}
    for tick_id, symbol in sorted(published.ids.items()):
        by_symbol.setdefault(symbol, []).append(tick_id)
    owed_cache: dict[tuple[frozenset[str], int], set[int]] = {}
    for client in population:
        if client.start is None:
            continue
        got = client.ids
        taken = set(got)
        duplicated += len(got) - len(taken)
        reordered += sum(1 for a, b in itertools.pairwise(got) if b < a)
        key = (frozenset(client.symbols), client.start)
        if key not in owed_cache:
            owed_cache[key] = {i for s in key[0] for i in by_symbol.get(s, []) if i > key[1]}
        owed = owed_cache[key]
        lost += len(owed - taken)
        unexpected += sum(1 for i in taken - owed if i in published.ids)
    latencies = sorted(x for c in population for x in c.latencies)
    answered = sorted(published.answered_in)
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
        "publishes_planned": published.planned,
        "publishes_made": published.made,
        "ticks_planned": published.ticks_planned,
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
        "publish_answer_ms": {
            name: None if v is None else round(v * 1000, 2)
            for name, v in (
                ("p50", _percentile(answered, 0.50)),
                ("p99", _percentile(answered, 0.99)),
                ("max", answered[-1] if answered else None),
            )
        },
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "unexpected": unexpected,
    }


def render(report: dict[str, Any]) -> str:
    """Format the report as a readable table."""
    latency = report["latency_ms"]
    rows = [
        ("clients connected / failed", f"{report['connected']} / {report['failed']}"),
        ("time to connect all", f"{report['connect_seconds']} s"),
        ("ticks published (errors)", f"{report['published']} ({report['publish_errors']})"),
        ("publishes made / planned", f"{report['publishes_made']} / {report['publishes_planned']}"),
        (
            "POST answered in p50 / p99",
            " / ".join(
                "-" if v is None else f"{v} ms"
                for v in (report["publish_answer_ms"]["p50"], report["publish_answer_ms"]["p99"])
            ),
        ),
        ("events delivered", f"{report['events_received']}"),
        ("events/s delivered", f"{report['events_per_second']}"),
        *((f"latency {k}", "-" if v is None else f"{v} ms") for k, v in latency.items()),
        (
            "lost / duplicated / reordered",
            f"{report['lost']} / {report['duplicated']} / {report['reordered']}",
        ),
        ("other symbols' ticks received", f"{report['unexpected']}"),
    ]
    if report["first_error"]:
        rows.append(("first error", report["first_error"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
