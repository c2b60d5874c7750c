"""The market-data figures of docs/benchmarks.md: candles and 24-hour statistics.

Run through ``docs/benchmark.py --only candles``.  For SQLite and PostgreSQL:
build a log of 1,000,000 ticks of 10 symbols over 20 hours ending now (bulk
inserted, not posted), roll it up into candles (timed), append 1,000 more that
stay above the watermark (the raw tail every answer merges), then time, as the
median of several requests through Flask's test client (routing, parameters,
queries, merge and JSON; no network):

- ``GET /api/candles?symbol=...&interval=1m&limit=1000`` (1,000 candles);
- ``GET /api/symbols`` (10 symbols with their 24-hour statistics);
- one rollup of 1,000 new ticks (what the producer's job does every second).

Prints figures; asserts nothing but that the answers have the expected size.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYMBOLS = [
    "BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD", "AAPL",
    "MSFT", "NVDA", "TSLA", "EUR-USD", "AMZN",
]  # fmt: skip
SPAN_MINUTES = 1200


def _rows(total: int, end_us: int) -> list[tuple[str, str, int, str]]:
    step = SPAN_MINUTES * 60_000_000 // total
    start = end_us - total * step
    return [
        (SYMBOLS[i % 10], f"{100 + (i * 7919) % 5000 / 100:.2f}", start + i * step, f"{i % 50}.5")
        for i in range(total)
    ]


def _bulk_insert(url: str, rows: list[tuple[str, str, int, str]]) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.executemany("INSERT INTO ticks (symbol, price, ts, size) VALUES (?, ?, ?, ?)", rows)
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        with (
            conn.cursor() as cur,
            cur.copy("COPY ticks (symbol, price, ts, size) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()


def _median_ms(call: Callable[[], Any], times: int) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        spent.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(spent), 2)


def measure(url: str, total: int, repeat: int) -> dict[str, Any]:
    """Build, roll up and time one database's log."""
    from ticker import candles, create_app, log
    from ticker.cli import migrate
    from ticker.events import Tick, now_us
    from ticker.state import app_state

    migrate(url)
    now = now_us()
    started = time.perf_counter()
    _bulk_insert(url, _rows(total, now - 2_000_000))
    inserted = time.perf_counter() - started
    app = create_app({"database_url": url, "producer": "off", "symbols": ",".join(SYMBOLS)})
    engine = app_state(app).engine
    started = time.perf_counter()
    rolled = candles.rollup(engine)
    rollup_s = time.perf_counter() - started
    tail = [Tick(SYMBOLS[i % 10], "123.45", now_us(), "1") for i in range(1000)]
    log.append(engine, tail)
    client = app.test_client()

    def ask_candles() -> None:
        answer = client.get(f"/api/candles?symbol={SYMBOLS[0]}&interval=1m&limit=1000")
        assert answer.status_code == 200 and len(answer.get_json()["candles"]) == 1000

    def ask_symbols() -> None:
        answer = client.get("/api/symbols")
        rows = answer.get_json()["symbols"]
        assert answer.status_code == 200 and all(r["stats"]["ticks"] > 0 for r in rows)

    for _ in range(3):  # warm caches, pools, the statement cache
        ask_candles()
        ask_symbols()
    candles_ms = _median_ms(ask_candles, repeat)
    symbols_ms = _median_ms(ask_symbols, repeat)
    candles.rollup(engine)

    def one_second() -> None:
        log.append(engine, [Tick(SYMBOLS[i % 10], "123.45", now_us(), "1") for i in range(1000)])
        candles.rollup(engine)

    # The append is inside: subtract it, measured alone, for the rollup's share.
    append_ms = _median_ms(
        lambda: log.append(engine, [Tick(SYMBOLS[0], "1.5", now_us(), "1")] * 1000), 5
    )
    rollup_1000_ms = round(_median_ms(one_second, 5) - append_ms, 2)
    engine.dispose()
    return {
        "database": url.split(":", 1)[0].split("+")[0],
        "ticks": total,
        "bulk insert s": round(inserted, 1),
        "rollup s": round(rollup_s, 1),
        "rollup ticks/s": round(rolled / rollup_s),
        "1,000 1m candles ms (median)": candles_ms,
        "/api/symbols, 10 with stats ms (median)": symbols_ms,
        "rollup of 1,000 new ticks ms": rollup_1000_ms,
    }


def run(
    tmp: Path,
    quick: bool,
    sqlite_url: Callable[[Path, str], str],
    postgres_url: Callable[[str], str | None],
    show: Callable[[str, list[dict[str, Any]]], None],
) -> None:
    """Measure SQLite, then PostgreSQL if it answers, and print the table."""
    total = 200_000 if quick else 1_000_000
    repeat = 9 if quick else 21
    rows = [measure(sqlite_url(tmp, "candles"), total, repeat)]
    pg = postgres_url("ticker_bench_candles")
    if pg:
        rows.append(measure(pg, total, repeat))
    show("Candles and 24-hour statistics (one process, Flask's test client)", rows)
