"""Candles and 24-hour statistics against a brute force over every tick the test wrote.

The brute force below is written from SPEC, independently of ``ticker.candles``:
buckets by ``ts`` floored to the width, open/close by (ts, id), high/low by
decimal value (ties: the smaller id), volume the exact sum of sizes.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.conftest import TOKEN
from ticker import candles, log
from ticker.config import Retention
from ticker.events import format_ts, parse_ts
from ticker.state import app_state

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WIDTHS = {"1s": 1, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
FAR = "2100-01-01T00:00:00Z"
Tick = tuple[int, str, str, int, str | None]  # id, symbol, price, ts (µs), size


def post(client: Any, ticks: list[dict[str, Any]]) -> list[Tick]:
    response = client.post(
        "/api/ticks", data=json.dumps(ticks), headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 201, response.get_json()
    ids = response.get_json()["ids"]
    return [
        (i, t["symbol"], t["price"], parse_ts(t["ts"]), t.get("size"))
        for i, t in zip(ids, ticks, strict=True)
    ]


def brute(
    ticks: list[Tick], symbol: str, width: int, start: int | None, end: int, limit: int
) -> list[dict[str, Any]]:
    span = width * 1_000_000
    buckets: dict[int, list[Tick]] = defaultdict(list)
    for tick in ticks:
        if tick[1] == symbol:
            buckets[(tick[3] // span) * span].append(tick)
    low = -(2**63) if start is None else start
    chosen = sorted(b for b in buckets if low <= b < end)
    chosen = chosen[:limit] if start is not None else chosen[-limit:]
    out = []
    for b in chosen:
        group = buckets[b]
        by_time = sorted(group, key=lambda t: (t[3], t[0]))
        high = max(group, key=lambda t: (Decimal(t[2]), -t[0]))
        lowest = min(group, key=lambda t: (Decimal(t[2]), t[0]))
        volume = sum((Decimal(t[4]) for t in group if t[4] is not None), Decimal(0))
        out.append(
            {
                "start": format_ts(b),
                "open": by_time[0][2],
                "high": high[2],
                "low": lowest[2],
                "close": by_time[-1][2],
                "volume": format(volume, "f"),
                "ticks": len(group),
                "first_id": min(t[0] for t in group),
                "last_id": max(t[0] for t in group),
            }
        )
    return out


def ask(client: Any, symbol: str, interval: str, **query: Any) -> list[dict[str, Any]]:
    args = "&".join(
        f"{k}={v}" for k, v in {"symbol": symbol, "interval": interval, **query}.items()
    )
    response = client.get(f"/api/candles?{args}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["symbol"], body["interval"]) == (symbol, interval)
    found: list[dict[str, Any]] = body["candles"]
    return found


def check_all(client: Any, ticks: list[Tick], symbols: list[str]) -> None:
    """Every interval, every symbol, a few ranges: every field equal to the brute force."""
    end = parse_ts(FAR)
    for symbol in symbols:
        for interval, width in WIDTHS.items():
            want = brute(ticks, symbol, width, None, end, 1000)
            assert ask(client, symbol, interval, end=FAR, limit=1000) == want, (symbol, interval)
            for limit in (1, 3):
                got = ask(client, symbol, interval, end=FAR, limit=limit)
                assert got == brute(ticks, symbol, width, None, end, limit)
            if want:
                first = parse_ts(want[0]["start"])
                middle = parse_ts(want[len(want) // 2]["start"])
                for start, stop in ((first, middle), (middle, end), (first + 1, end)):
                    if start < stop:
                        got = ask(
                            client, symbol, interval, start=format_ts(start),
                            end=format_ts(stop), limit=2,
                        )  # fmt: skip
                        assert got == brute(ticks, symbol, width, start, stop, 2)


def scenario() -> list[dict[str, Any]]:
    """Ticks out of id order, equal times, midnight, trailing zeros, with and without sizes."""
    rows = [
        ("BTC-USD", "67012.35000000", "2026-11-21T23:59:59.500000Z", "0.00100000"),
        ("BTC-USD", "67012.35", "2026-11-21T23:59:59.500000Z", None),  # equal value, later id
        ("BTC-USD", "67000.10", "2026-11-21T23:59:58Z", "2"),  # earlier ts, later id: the open
        ("BTC-USD", "66999.99", "2026-11-22T00:00:00Z", "0"),  # the next UTC day
        ("BTC-USD", "67100", "2026-11-22T00:00:00Z", None),  # equal ts: the id decides
        ("BTC-USD", "66000.5", "2026-11-22T03:59:59.999999Z", "1.5"),  # last of a 4h bucket
        ("BTC-USD", "66000.50", "2026-11-22T04:00:00Z", "123456789.123456789"),
        ("ETH-USD", "3500.00", "2026-11-21T10:00:00Z", None),
        ("ETH-USD", "3500.0", "2026-11-21T10:00:00Z", None),  # no size at all in this bucket
        ("ETH-USD", "999.5", "2026-11-21T10:05:00Z", None),  # above 3500.00 as a string, not else
        ("BTC-USD", "67500.00", "2026-11-21T12:00:00Z", "0.5"),  # much older, posted late
    ]
    out = []
    for symbol, price, ts, size in rows:
        tick: dict[str, Any] = {"symbol": symbol, "price": price, "ts": ts}
        if size is not None:
            tick["size"] = size
        out.append(tick)
    return out


def test_candles_equal_the_brute_force_before_and_after_rollup_prune_and_a_late_tick(
    app: Flask, client: Any
) -> None:
    engine = app_state(app).engine
    written = post(client, scenario())
    check_all(client, written, ["BTC-USD", "ETH-USD"])
    (high,) = [c for c in ask(client, "BTC-USD", "1m", end=FAR) if c["ticks"] == 3]
    assert high["high"] == "67012.35000000" and high["open"] == "67000.10"

    assert candles.rollup(engine) == len(written)
    check_all(client, written, ["BTC-USD", "ETH-USD"])

    # Retention deletes every raw tick but the newest; the candles keep them all.
    log.prune(engine, Retention(max_events=1), now_us=0)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM ticks")) == 1
    check_all(client, written, ["BTC-USD", "ETH-USD"])

    late = post(
        client,
        [
            {"symbol": "BTC-USD", "price": "70000.000", "ts": "2026-11-21T23:59:59.500000Z"},
            {"symbol": "BTC-USD", "price": "1.5", "ts": "2026-11-21T23:59:58Z", "size": "3"},
            {"symbol": "ETH-USD", "price": "3500", "ts": "2026-11-21T10:00:00Z", "size": "1"},
        ],
    )
    everything = written + late
    check_all(client, everything, ["BTC-USD", "ETH-USD"])  # rows + the raw tail
    candles.rollup(engine)
    check_all(client, everything, ["BTC-USD", "ETH-USD"])  # counted once after the rollup
    log.prune(engine, Retention(max_events=1), now_us=0)
    check_all(client, everything, ["BTC-USD", "ETH-USD"])


def test_a_rollup_that_fails_before_commit_moves_nothing(
    app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = app_state(app).engine
    written = post(client, scenario()[:5])
    candles.rollup(engine)
    written += post(client, scenario()[5:])

    def table() -> list[Any]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT * FROM candles ORDER BY 1, 2, 3"))]

    before = table()
    with engine.connect() as conn:
        mark = log.rolled_up(conn)
    real = log.write_state

    def crash(conn: Any, name: str, value: int) -> None:
        if name == log.ROLLED_UP:
            raise RuntimeError("killed between writing the candles and moving the watermark")
        real(conn, name, value)

    monkeypatch.setattr(log, "write_state", crash)
    with pytest.raises(RuntimeError):
        candles.rollup(engine)
    with pytest.raises(RuntimeError):
        log.prune(engine, Retention(max_events=1), now_us=0)
    assert table() == before
    with engine.connect() as conn:
        assert log.rolled_up(conn) == mark
        assert log.position(conn).pruned_through == 0
    check_all(client, written, ["BTC-USD"])
    monkeypatch.setattr(log, "write_state", real)
    candles.rollup(engine)
    check_all(client, written, ["BTC-USD", "ETH-USD"])


def test_prune_never_deletes_above_the_rollup_watermark(
    app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = app_state(app).engine
    written = post(client, scenario())
    monkeypatch.setattr(candles, "fold_through", lambda conn, upto=None: 0)  # a rollup that lags
    assert log.prune(engine, Retention(max_events=1), now_us=0) == 0
    monkeypatch.undo()
    assert log.prune(engine, Retention(max_events=1), now_us=0) == len(written) - 1
    with engine.connect() as conn:
        assert log.rolled_up(conn) >= log.position(conn).pruned_through
    check_all(client, written, ["BTC-USD", "ETH-USD"])


def test_candle_retention_deletes_old_candles_by_interval(app: Flask, client: Any) -> None:
    engine = app_state(app).engine
    written = post(client, scenario())
    candles.rollup(engine)
    now = parse_ts("2026-11-22T04:00:01Z")
    keep: dict[int, float | None] = {w: None for w in WIDTHS.values()}
    keep[1] = 1.5  # 1s candles: those that started in the last 1.5 seconds
    assert candles.prune(engine, keep, now) > 0
    end = parse_ts(FAR)
    assert [c["start"] for c in ask(client, "BTC-USD", "1s", end=FAR)] == [
        "2026-11-22T04:00:00.000000Z"
    ]
    assert ask(client, "BTC-USD", "1m", end=FAR) == brute(written, "BTC-USD", 60, None, end, 500)


def test_the_default_end_is_now_and_includes_the_forming_candle(client: Any) -> None:
    from ticker.events import now_us

    ts = format_ts(now_us())
    written = post(client, [{"symbol": "AAPL", "price": "230.10", "ts": ts, "size": "10"}])
    (candle,) = ask(client, "AAPL", "1m")
    assert (candle["close"], candle["ticks"], candle["last_id"]) == ("230.10", 1, written[0][0])
    future = post(client, [{"symbol": "AAPL", "price": "1", "ts": "2099-01-01T00:00:00Z"}])
    assert len(ask(client, "AAPL", "1m")) == 1  # after the default end
    assert ask(client, "AAPL", "1d", end=FAR)[-1]["first_id"] == future[0][0]


@pytest.mark.parametrize(
    ("query", "status", "parameter"),
    [
        ("symbol=BTC-USD&interval=2m", 400, "interval"),
        ("symbol=BTC-USD&interval=1M", 400, "interval"),
        ("symbol=BTC-USD&start=yesterday", 400, "start"),
        ("symbol=BTC-USD&end=2026-13-01T00:00:00Z", 400, "end"),
        ("symbol=BTC-USD&start=2026-11-21T10:00:00Z&end=2026-11-21T10:00:00Z", 400, "start"),
        ("symbol=BTC-USD&start=2026-11-22T00:00:00Z&end=2026-11-21T00:00:00Z", 400, "start"),
        ("interval=1m", 400, "symbol"),
        ("symbol=BTC-USD,ETH-USD", 400, "symbol"),
        ("symbol=BTC-USD&limit=0", 400, None),
        ("symbol=BTC-USD&limit=x", 400, None),
        ("symbol=%3Cb%3E", 400, None),
        ("symbol=ZZZ-USD", 404, None),
    ],
)
def test_bad_candle_requests_are_named(
    client: Any, query: str, status: int, parameter: str | None
) -> None:
    response = client.get(f"/api/candles?{query}")
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["error"]
    if parameter is not None:
        assert body["parameter"] == parameter and parameter in body["error"]


def test_limit_defaults_to_500_and_is_capped_at_1000(app: Flask, client: Any) -> None:
    base = parse_ts("2026-11-21T00:00:00Z")
    ticks = [
        {"symbol": "AAPL", "price": f"{100 + i % 7}.5", "ts": format_ts(base + i * 1_000_000)}
        for i in range(1200)
    ]
    written = post(client, ticks)
    candles.rollup(app_state(app).engine)
    end = parse_ts(FAR)
    assert ask(client, "AAPL", "1s", end=FAR) == brute(written, "AAPL", 1, None, end, 500)
    capped = ask(client, "AAPL", "1s", end=FAR, limit=5000)
    assert capped == brute(written, "AAPL", 1, None, end, 1000)
    start = format_ts(base + 10_000_000)
    assert ask(client, "AAPL", "1s", start=start, end=FAR, limit=5000) == brute(
        written, "AAPL", 1, base + 10_000_000, end, 1000
    )


def brute_stats(ticks: list[Tick], symbol: str, now: int) -> dict[str, Any] | None:
    minute = 60_000_000
    since = (now // minute) * minute + minute - 86_400_000_000
    group = [t for t in ticks if t[1] == symbol and t[3] >= since]
    if not group:
        return None
    by_time = sorted(group, key=lambda t: (t[3], t[0]))
    opened, last = Decimal(by_time[0][2]), Decimal(by_time[-1][2])
    change = last - opened
    pct = (change * 100 / opened).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return {
        "open": by_time[0][2],
        "high": max(group, key=lambda t: (Decimal(t[2]), -t[0]))[2],
        "low": min(group, key=lambda t: (Decimal(t[2]), t[0]))[2],
        "change": format(change, "f"),
        "change_pct": format(abs(pct) if pct.is_zero() else pct, "f"),
        "volume": format(sum((Decimal(t[4]) for t in group if t[4]), Decimal(0)), "f"),
        "ticks": len(group),
    }


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


_PRICES = st.builds(
    lambda whole, frac, zeros: f"{whole}.{frac}{'0' * zeros}" if frac else str(whole),
    st.integers(1, 120),
    st.sampled_from(["", "5", "50", "25", "99", "01"]),
    st.integers(0, 3),
)
_TICKS = st.lists(
    st.fixed_dictionaries(
        {
            "symbol": st.sampled_from(["BTC-USD", "ETH-USD"]),
            "price": _PRICES,
            # Around a midnight, to the microsecond, often equal.
            "ts": st.integers(-7300, 7300).map(
                lambda s: format_ts(parse_ts("2026-11-22T00:00:00Z") + s * 500_000)
            ),
        },
        optional={"size": st.sampled_from(["0", "1", "0.00100000", "2.5", "10.250"])},
    ),
    min_size=1,
    max_size=40,
)


def test_generated_ticks_rolled_up_pruned_and_late_equal_the_brute_force(
    app: Flask, client: Any
) -> None:
    engine = app_state(app).engine
    everything: list[Tick] = []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_TICKS, _TICKS, st.booleans())
    def check(first: list[dict[str, Any]], second: list[dict[str, Any]], prune: bool) -> None:
        everything.extend(post(client, first))
        candles.rollup(engine)
        if prune:
            log.prune(engine, Retention(max_events=3), now_us=0)
        everything.extend(post(client, second))  # the raw tail: late into rolled-up buckets
        end = parse_ts(FAR)
        for symbol in ("BTC-USD", "ETH-USD"):
            for interval in ("1s", "1m", "4h", "1d"):
                want = brute(everything, symbol, WIDTHS[interval], None, end, 1000)
                assert ask(client, symbol, interval, end=FAR, limit=1000) == want

    check()
