"""The brute force the candle tests compare with, written from SPEC, apart from ``ticker.candles``.

Buckets by ``ts`` floored to the width, open/close by (ts, id), high/low by
decimal value (ties: the smaller id), volume the exact sum of sizes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tests.fakes import TOKEN
from ticker.events import format_ts, parse_ts

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
