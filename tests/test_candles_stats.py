"""The 24-hour statistics and the stale flag of ``/api/symbols`` against a brute force."""

from __future__ import annotations

import random
from typing import Any

from flask import Flask

from tests.brute import brute_stats, post
from ticker import candles, log
from ticker.config import Retention
from ticker.events import format_ts, parse_ts
from ticker.state import app_state


def test_day_stats_equal_the_brute_force_over_the_rolling_window(app: Flask, client: Any) -> None:
    engine = app_state(app).engine
    now = parse_ts("2026-11-22T10:30:15Z")
    rng = random.Random(13)
    ticks = []
    for _ in range(400):
        ts = now - rng.randint(-60, 90_000) * 1_000_000 - rng.randint(0, 999_999)
        price = f"{rng.randint(90, 110)}.{rng.randint(0, 99):02d}" + "0" * rng.randint(0, 3)
        tick: dict[str, Any] = {"symbol": rng.choice(["BTC-USD", "AAPL"]), "price": price}
        tick["ts"] = format_ts(ts)
        if rng.random() < 0.7:
            tick["size"] = f"{rng.randint(0, 5)}.{rng.randint(0, 999):03d}"
        ticks.append(tick)
    written = post(client, ticks[:250])
    candles.rollup(engine)
    written += post(client, ticks[250:])  # the raw tail, some with old times

    def stats() -> dict[str, Any]:
        with candles.reading(engine) as conn:
            found = candles.day_stats(conn, ["BTC-USD", "AAPL", "ETH-USD"], now)
        return {s: candles.stats_json(c) for s, c in found.items()}

    want = {s: brute_stats(written, s, now) for s in ["BTC-USD", "AAPL", "ETH-USD"]}
    assert want["ETH-USD"] is None
    assert stats() == want
    candles.rollup(engine)
    log.prune(engine, Retention(max_events=1), now_us=0)
    assert stats() == want


def test_symbols_carry_stats_and_a_stale_flag(make_app: Any) -> None:
    from ticker.events import now_us

    app = make_app(symbols="BTC-USD,AAPL,MSFT", tick_interval=1)
    client = app.test_client()
    now = now_us()
    post(
        client,
        [
            {
                "symbol": "BTC-USD",
                "price": "100.00",
                "ts": format_ts(now - 60_000_000),
                "size": "1",
            },
            {"symbol": "BTC-USD", "price": "99.5", "ts": format_ts(now - 1_000_000), "size": "2"},
            {"symbol": "AAPL", "price": "230", "ts": format_ts(now - 30_000_000)},
        ],
    )
    rows = {r["symbol"]: r for r in client.get("/api/symbols").get_json()["symbols"]}
    assert rows["BTC-USD"]["stats"] == {
        "open": "100.00", "high": "100.00", "low": "99.5", "change": "-0.50",
        "change_pct": "-0.50", "volume": "3", "ticks": 2,
    }  # fmt: skip
    assert rows["BTC-USD"]["stale"] is False
    assert rows["AAPL"]["stale"] is True  # 30 s old: more than max(5 x 1 s, 10 s)
    assert (rows["MSFT"]["stats"], rows["MSFT"]["tick"], rows["MSFT"]["stale"]) == (
        None, None, True,
    )  # fmt: skip
