"""The page's detail view and row statistics in chromium, on real gunicorn.

The candles the page holds and draws (``window.tickerState.detail``, read through the
chart library's own ``series.data()``) are compared with what ``/api/candles`` answers
for the same symbol and interval, after back-fill and after live ticks, so a tick
counted twice or missed at the hand-over shows up as a difference.
"""

from __future__ import annotations

import os
import random
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes import SQLITE_ONLY, eventually
from tests.pages import Browser, kill_hard, open_page
from tests.servers import Server
from ticker import ROOT

README_SCREENSHOT = ROOT / "docs" / "detail.png"
NOTICE = ROOT / "ticker" / "static" / "vendor" / "lightweight-charts.NOTICE.txt"
SYMBOLS = "BTC-USD,ETH-USD,AAPL"

pytestmark = [pytest.mark.server, SQLITE_ONLY]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def minute_ago(minutes: int) -> datetime:
    """The start of the UTC minute ``minutes`` before this one."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes)


def history(symbol: str, start: datetime, minutes: int, seed: int = 7) -> list[dict[str, Any]]:
    """A random walk of ``symbol``, three ticks a minute from ``start``, with sizes.

    Prices keep trailing zeros and some ticks repeat a price, as real feeds do.
    """
    rng = random.Random(seed)
    price = Decimal("67012.30")
    ticks = []
    for minute in range(minutes):
        for second in (5, 25, 45):
            price += Decimal(rng.randint(-400, 400)) / 10
            size = Decimal(rng.randint(1, 5000)) / 1000
            moment = start + timedelta(minutes=minute, seconds=second)
            ticks.append({"symbol": symbol, "price": f"{price:.2f}", "ts": iso(moment)})
            ticks[-1]["size"] = f"{size:.3f}"
    return ticks


def grouped(value: str) -> str:
    """A decimal string as the page shows it: as given, integer digits grouped."""
    whole, dot, frac = value.lstrip("-").partition(".")
    text = f"{int(whole):,}{dot}{frac}"
    if value.startswith("-"):
        return "\u2212" + text
    return text


def change_text(stats: dict[str, Any]) -> str:
    def signed(value: str) -> str:
        if value.startswith("-") or Decimal(value) == 0:
            return grouped(value)
        return "+" + grouped(value)

    return f"{signed(stats['change'])} ({signed(stats['change_pct'])}%)"


def api_candles(server: Server, symbol: str, interval: str) -> list[dict[str, Any]]:
    body = server.get(f"/api/candles?symbol={symbol}&interval={interval}")
    assert body["symbol"] == symbol and body["interval"] == interval
    candles: list[dict[str, Any]] = body["candles"]
    return candles


def detail(browser: Browser) -> dict[str, Any] | None:
    state: dict[str, Any] | None = browser.state("detail")
    return state


def wait_detail(browser: Browser, symbol: str, interval: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        state = detail(browser)
        ok = state and state["ready"] and (state["symbol"], state["interval"]) == (symbol, interval)
        return state if ok else None

    return eventually(ready, f"the {symbol} {interval} chart drawn")


def epoch(start: str) -> int:
    return int(datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp())


def drawn_from(candles: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[float]]:
    """What the chart should draw for these candles: numbers for the canvas."""
    bars = [
        {
            "time": epoch(c["start"]),
            **{k: float(c[k]) for k in ("open", "high", "low", "close")},
        }
        for c in candles
    ]
    return bars, [float(c["volume"]) for c in candles]


def assert_page_equals_api(browser: Browser, server: Server, symbol: str, interval: str) -> None:
    """The page's candles, held and drawn, are exactly the server's (waiting for live ticks)."""

    def same() -> bool:
        state = detail(browser)
        return bool(state) and state["candles"] == api_candles(server, symbol, interval)

    try:
        eventually(same, f"the page's {symbol} {interval} candles equal to /api/candles", 10)
    except AssertionError:
        held = (detail(browser) or {}).get("candles", [])
        served = api_candles(server, symbol, interval)
        diff = [(h, s) for h, s in zip(held, served, strict=False) if h != s][:3]
        raise AssertionError(
            f"page holds {len(held)} candles, server {len(served)}; first differences {diff}"
        ) from None
    state = detail(browser)
    assert state is not None
    bars, volumes = drawn_from(state["candles"])
    drawn = [{k: b[k] for k in ("time", "open", "high", "low", "close")} for b in state["drawn"]]
    assert drawn == bars
    assert [v["value"] for v in state["volumes"]] == volumes
    assert [v["time"] for v in state["volumes"]] == [b["time"] for b in bars]


def url_query(browser: Browser) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(browser.page.url).query).items()}


def test_detail_candles_equal_the_api_and_the_forming_candle_follows_live_ticks(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols=SYMBOLS)
    start = minute_ago(40)
    server.post_ticks(history("BTC-USD", start, 36))
    server.post_ticks([{"symbol": "ETH-USD", "price": "3501.50", "size": "2"}])
    open_page(browser, server, "?symbols=BTC-USD,ETH-USD&detail=BTC-USD&interval=1m")
    state = wait_detail(browser, "BTC-USD", "1m")
    assert len(state["candles"]) == 36
    assert_page_equals_api(browser, server, "BTC-USD", "1m")
    assert browser.page.is_visible("#detail-chart canvas")

    # Live ticks inside the newest candle: its close moves, then its high, then its low.
    forming = api_candles(server, "BTC-USD", "1m")[-1]
    at = datetime.fromisoformat(forming["start"].replace("Z", "+00:00"))
    high, low = Decimal(forming["high"]), Decimal(forming["low"])
    steps = [
        (f"{(high + low) / 2:.2f}", "close"),
        (f"{high + Decimal('12.5'):.2f}", "high"),
        (f"{low - Decimal('0.01'):.2f}", "low"),
    ]
    for n, (price, moved) in enumerate(steps):
        ts = iso(at + timedelta(seconds=50, milliseconds=n))
        (tick_id,) = server.post_ticks([{"symbol": "BTC-USD", "price": price, "ts": ts}])
        eventually(lambda i=tick_id: detail(browser)["anchor"] == i, f"tick {tick_id} applied")
        candle = detail(browser)["candles"][-1]
        assert candle["close"] == price
        assert candle[moved] == price, (moved, candle)
        assert candle["last_id"] == tick_id
        assert_page_equals_api(browser, server, "BTC-USD", "1m")
    # A size adds to the volume exactly; a tick in the next minute starts a new candle.
    ts = iso(at + timedelta(minutes=1, seconds=1))
    server.post_ticks([{"symbol": "BTC-USD", "price": "67000.10", "ts": ts, "size": "0.125"}])
    eventually(lambda: len(detail(browser)["candles"]) == 37, "a new candle")
    assert_page_equals_api(browser, server, "BTC-USD", "1m")
    # The other symbol's ticks never reach this chart.
    server.post_ticks([{"symbol": "ETH-USD", "price": "1.00", "ts": ts}])
    eventually(lambda: browser.row_text("ETH-USD", "price") == "1.00", "ETH-USD live")
    assert_page_equals_api(browser, server, "BTC-USD", "1m")


def test_live_ticks_into_older_candles_ties_and_ticks_without_size_count_as_the_server_counts(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols=SYMBOLS)
    start = minute_ago(30)
    server.post_ticks(history("BTC-USD", start, 20))
    server.post_ticks(history("BTC-USD", start + timedelta(minutes=22), 3, seed=9))
    open_page(browser, server, "?symbols=BTC-USD&detail=BTC-USD&interval=1m")
    wait_detail(browser, "BTC-USD", "1m")
    served = api_candles(server, "BTC-USD", "1m")
    assert len(served) == 23
    older = served[5]  # not the newest: the chart redraws it
    at = datetime.fromisoformat(older["start"].replace("Z", "+00:00"))
    high = Decimal(older["high"])
    late = iso(at + timedelta(seconds=55))  # after that minute's ticks, as a late trade
    ticks = [
        # the same high written with one more zero: the first one stays
        {"symbol": "BTC-USD", "price": f"{high:.3f}", "ts": late, "size": "0.100"},
        # a new high, then a tick without size: the volume keeps its digits
        {"symbol": "BTC-USD", "price": f"{high + 1:.2f}", "ts": late},
        # equal times: the larger id is the close
        {"symbol": "BTC-USD", "price": "60000.5", "ts": late, "size": "2.5"},
        # a minute no candle had yet, between two that have: a candle is inserted
        {"symbol": "BTC-USD", "price": "61000", "ts": iso(start + timedelta(minutes=21))},
    ]
    for tick in ticks:
        (tick_id,) = server.post_ticks([tick])
        eventually(lambda i=tick_id: detail(browser)["anchor"] == i, f"tick {tick_id} applied")
        assert_page_equals_api(browser, server, "BTC-USD", "1m")
    changed = next(c for c in detail(browser)["candles"] if c["start"] == older["start"])
    assert changed["high"] == f"{high + 1:.2f}" and changed["close"] == "60000.5"
    assert changed["ticks"] == older["ticks"] + 3
    assert len(detail(browser)["candles"]) == len(served) + 1
    assert detail(browser)["candles"][20]["open"] == "61000"


def test_ticks_already_in_the_back_filled_candles_are_not_counted_again(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols=SYMBOLS)
    start = minute_ago(12)
    server.post_ticks(history("BTC-USD", start, 8))
    query = "?symbols=BTC-USD,ETH-USD"
    open_page(browser, server, query)
    eventually(lambda: browser.ids("BTC-USD"), "BTC-USD back-filled")
    resume = browser.state("lastId")
    # Leave the page, ticks come, come back to the chart: the page resumes the stream
    # from its last id, so the stream replays ticks the candles already hold.
    browser.page.goto(server.base + "/healthz")
    ts = iso(start + timedelta(minutes=7, seconds=50))
    replayed = server.post_ticks(
        [{"symbol": "BTC-USD", "price": "70000.00", "ts": ts, "size": "1.5"}] * 3
    )
    assert min(replayed) > resume
    open_page(browser, server, query + "&detail=BTC-USD&interval=1m")
    wait_detail(browser, "BTC-USD", "1m")
    assert browser.state("resumedFrom") == resume
    eventually(lambda: browser.state("replayed") >= 3, "the three ticks replayed")
    assert detail(browser)["anchor"] >= max(replayed)
    assert_page_equals_api(browser, server, "BTC-USD", "1m")

    # Ticks that come while the candles are being fetched: those in the answer are held
    # and dropped, those after it are held and applied.
    before: list[int] = []
    after: list[int] = []

    def post_around_the_answer(route: Any) -> None:
        stamp = iso(start + timedelta(minutes=7, seconds=55))
        tick = {"symbol": "BTC-USD", "price": "69990.00", "ts": stamp, "size": "0.5"}
        before.extend(server.post_ticks([tick, tick]))
        eventually(lambda: browser.state("lastId") >= before[-1], "ticks before, on the page")
        answer = route.fetch()
        after.extend(server.post_ticks([{**tick, "price": "70010.00"}] * 2))
        eventually(lambda: browser.state("lastId") >= after[-1], "ticks after, on the page")
        route.fulfill(response=answer)

    browser.page.route(lambda url: "/api/candles?" in url, post_around_the_answer)
    browser.page.click("#intervals [data-interval='5m']")
    wait_detail(browser, "BTC-USD", "5m")
    assert before and after, "the candles were not fetched"
    assert_page_equals_api(browser, server, "BTC-USD", "5m")
    assert detail(browser)["candles"][-1]["close"] == "70010.00"


def test_opening_the_view_changing_the_interval_reloading_and_going_back(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols=SYMBOLS)
    start = minute_ago(90)
    server.post_ticks(history("BTC-USD", start, 80))
    server.post_ticks(history("ETH-USD", start, 20, seed=3))
    open_page(browser, server, "?symbols=BTC-USD,ETH-USD")
    assert browser.page.is_hidden("#detail")
    entries = browser.page.evaluate("() => history.length")

    browser.page.click("#board .row:first-child .price")
    wait_detail(browser, "BTC-USD", "1m")
    assert url_query(browser) == {
        "symbols": "BTC-USD,ETH-USD",
        "detail": "BTC-USD",
        "interval": "1m",
    }
    assert browser.page.evaluate("() => history.length") == entries + 1
    assert browser.page.get_attribute("#board .row:first-child", "aria-current") == "true"
    assert_page_equals_api(browser, server, "BTC-USD", "1m")

    browser.page.click("#intervals [data-interval='5m']")
    wait_detail(browser, "BTC-USD", "5m")
    assert url_query(browser)["interval"] == "5m"
    assert browser.page.get_attribute("[data-interval='5m']", "aria-pressed") == "true"
    assert browser.page.evaluate("() => history.length") == entries + 1  # replaced, not pushed
    assert_page_equals_api(browser, server, "BTC-USD", "5m")

    browser.page.reload()
    browser.wait_connection("live")
    wait_detail(browser, "BTC-USD", "5m")
    assert url_query(browser)["detail"] == "BTC-USD"
    assert_page_equals_api(browser, server, "BTC-USD", "5m")

    browser.page.go_back()
    eventually(lambda: browser.page.is_hidden("#detail"), "the view closed by Back")
    assert url_query(browser) == {"symbols": "BTC-USD,ETH-USD"}
    assert browser.state("detail") is None
    assert browser.rows() == ["BTC-USD", "ETH-USD"]

    # The keyboard: a row takes the focus, Enter or Space opens it, Escape closes it.
    browser.page.focus("#board .row:nth-child(2)")
    browser.page.keyboard.press("Enter")
    wait_detail(browser, "ETH-USD", "5m")  # the interval chosen last
    assert url_query(browser)["detail"] == "ETH-USD"
    assert browser.page.evaluate("() => document.activeElement.id") == "detail-title"
    assert_page_equals_api(browser, server, "ETH-USD", "5m")
    browser.page.keyboard.press("Escape")
    eventually(lambda: browser.page.is_hidden("#detail"), "the view closed by Escape")
    assert url_query(browser) == {"symbols": "BTC-USD,ETH-USD"}
    focused = "() => document.activeElement.querySelector('.sym')?.textContent"
    assert browser.page.evaluate(focused) == "ETH-USD"  # back on its row
    browser.page.focus("#board .row:first-child")
    browser.page.keyboard.press(" ")
    wait_detail(browser, "BTC-USD", "5m")
    browser.page.click("#detail-close")
    eventually(lambda: browser.page.is_hidden("#detail"), "the view closed by its button")
    assert url_query(browser) == {"symbols": "BTC-USD,ETH-USD"}
    assert browser.page.evaluate("() => history.length") == entries + 1

    # Removing the open symbol closes its view.
    browser.page.click("#board .row:first-child")
    wait_detail(browser, "BTC-USD", "5m")
    browser.page.click("#board .row:first-child .remove")
    eventually(lambda: browser.page.is_hidden("#detail"), "the view closed with its symbol")
    assert url_query(browser) == {"symbols": "ETH-USD"}
    assert browser.state("detail") is None

    # A shared link opens the view in a fresh tab; a bad interval falls back to 1m.
    page = browser.page.context.new_page()
    page.goto(f"{server.base}/?symbols=ETH-USD,BTC-USD&detail=eth-usd&interval=2m")
    other = Browser(page)
    wait_detail(other, "ETH-USD", "1m")
    assert url_query(other)["interval"] == "1m" and url_query(other)["detail"] == "ETH-USD"
    assert other.problems == []
    page.close()


def test_a_reset_fetches_the_view_again_from_the_new_log(
    serve: Callable[..., Server],
    browser: Browser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = {"source": "none", "symbols": SYMBOLS}
    server = serve(**config)
    server.post_ticks(history("BTC-USD", minute_ago(20), 15))
    open_page(browser, server, "?symbols=BTC-USD&detail=BTC-USD&interval=1m")
    wait_detail(browser, "BTC-USD", "1m")
    kill_hard(server)
    browser.wait_connection("reconnecting")
    # Back on an empty log: the page's last id is ahead of the new head.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    again = serve(port=server.port, database_url=fresh, **config)
    again.post_ticks(history("BTC-USD", minute_ago(6), 4, seed=5))
    browser.page.wait_for_selector("#notice", state="visible")
    browser.wait_connection("live")
    assert browser.state("resets") == 1
    eventually(lambda: len(detail(browser)["candles"]) == 4, "the new log's candles")
    assert_page_equals_api(browser, again, "BTC-USD", "1m")
    again.post_ticks([{"symbol": "BTC-USD", "price": "1.25", "size": "3"}])
    eventually(lambda: detail(browser)["candles"][-1]["close"] == "1.25", "a live tick after")
    assert_page_equals_api(browser, again, "BTC-USD", "1m")


def test_the_crosshair_reads_out_the_candle_under_the_pointer(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols=SYMBOLS)
    server.post_ticks(history("BTC-USD", minute_ago(30), 25))
    open_page(browser, server, "?symbols=BTC-USD&detail=BTC-USD&interval=1m")
    state = wait_detail(browser, "BTC-USD", "1m")
    newest = state["candles"][-1]
    # Away from the chart, the read-out shows the newest candle.
    assert browser.page.get_attribute("#detail-readout", "data-start") == newest["start"]
    target = state["candles"][10]
    point = browser.page.evaluate("(s) => window.tickerState.detailPoint(s)", target["start"])
    box = browser.page.locator("#detail-chart").bounding_box()
    assert point and box
    browser.page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])
    eventually(
        lambda: browser.page.get_attribute("#detail-readout", "data-start") == target["start"],
        "the read-out of the candle under the pointer",
    )

    def shown(part: str) -> str:
        return browser.page.text_content(f"#detail-readout .{part} .v") or ""

    at = datetime.fromisoformat(target["start"].replace("Z", "+00:00"))
    assert shown("time") == at.strftime("%Y-%m-%d %H:%M UTC")
    for part in ("open", "high", "low", "close"):
        assert shown(part).replace(",", "") == target[part]
    assert shown("volume").replace(",", "") == target["volume"]
    assert shown("ticks") == str(target["ticks"])


def test_the_detail_view_fits_a_phone(
    serve: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    server = serve(source="none", symbols=SYMBOLS)
    server.post_ticks(history("BTC-USD", minute_ago(30), 25))
    browser.page.set_viewport_size({"width": 390, "height": 844})
    open_page(browser, server, "?symbols=BTC-USD,ETH-USD,AAPL&detail=BTC-USD&interval=1m")
    wait_detail(browser, "BTC-USD", "1m")
    assert_page_equals_api(browser, server, "BTC-USD", "1m")
    assert browser.page.evaluate("() => document.documentElement.scrollWidth") <= 390
    chart = browser.page.locator("#detail-chart").bounding_box()
    assert chart and chart["x"] >= 0 and chart["x"] + chart["width"] <= 390
    assert chart["height"] > 200
    # Every interval button is on screen and can be tapped.
    for button in browser.page.locator("#intervals button").all():
        box = button.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
    browser.page.click("#intervals [data-interval='1h']")
    wait_detail(browser, "BTC-USD", "1h")
    assert browser.page.evaluate("() => document.documentElement.scrollWidth") <= 390
    browser.page.emulate_media(color_scheme="dark")
    browser.page.screenshot(path=str(tmp_path / "detail-phone.png"), full_page=True)


def test_rows_show_the_24_hour_statistics_and_the_server_s_stale_mark(
    serve: Callable[..., Server], browser: Browser
) -> None:
    # No source and a tiny tick interval: a symbol whose last tick ages turns stale.
    server = serve(source="none", symbols=SYMBOLS, tick_interval=0.1)
    server.post_ticks(
        [
            {"symbol": "BTC-USD", "price": "67012.30", "size": "0.5"},
            {"symbol": "BTC-USD", "price": "66000", "size": "1.25"},
            {"symbol": "BTC-USD", "price": "67100.00"},
            {"symbol": "ETH-USD", "price": "3501.5"},
        ]
    )
    open_page(browser, server, "?symbols=BTC-USD,ETH-USD,AAPL")

    def api_row(symbol: str) -> dict[str, Any]:
        rows = {r["symbol"]: r for r in server.get("/api/symbols")["symbols"]}
        row: dict[str, Any] = rows[symbol]
        return row

    def shown(symbol: str) -> dict[str, str]:
        return {
            part: browser.row_text(symbol, part) for part in ("change", "high", "low", "volume")
        }

    def expected(stats: dict[str, Any]) -> dict[str, str]:
        return {
            "change": change_text(stats),
            "high": "H" + grouped(stats["high"]),
            "low": "L" + grouped(stats["low"]),
            "volume": "Vol" + grouped(stats["volume"]),
        }

    stats = api_row("BTC-USD")["stats"]
    assert (stats["high"], stats["low"], stats["volume"]) == ("67100.00", "66000", "1.75")
    eventually(lambda: shown("BTC-USD") == expected(stats), "BTC-USD statistics as the API's")
    assert shown("BTC-USD")["high"] == "H67,100.00"
    assert browser.page.get_attribute("#board .row:first-child", "data-trend") == "up"
    # AAPL never ticked: no statistics.
    assert api_row("AAPL")["stats"] is None
    assert browser.row_text("AAPL", "high") == "H—"

    # Between two reads of /api/symbols, live ticks move the figures on, exactly as the
    # server counts them: with the reads cut off, the row still ends equal to the API.
    browser.page.route(lambda url: "/api/symbols" in url, lambda route: route.abort())
    server.post_ticks(
        [
            {"symbol": "BTC-USD", "price": "67250.5", "size": "0.0005"},
            {"symbol": "BTC-USD", "price": "65999.99", "size": "10"},
            {"symbol": "ETH-USD", "price": "3400"},
        ]
    )
    moved = api_row("BTC-USD")["stats"]
    assert moved["high"] == "67250.5" and moved["low"] == "65999.99"
    eventually(lambda: shown("BTC-USD") == expected(moved), "BTC-USD moved by live ticks")
    assert browser.state("stats('BTC-USD')") == moved
    eth = api_row("ETH-USD")["stats"]
    assert eth["change"].startswith("-")
    eventually(lambda: shown("ETH-USD") == expected(eth), "ETH-USD moved by a live tick")
    assert browser.page.get_attribute("#board .row:nth-child(2)", "data-trend") == "down"
    browser.page.unroute_all()

    # BTC-USD keeps ticking, ETH-USD does not: the server says ETH-USD is stale.
    def keep_btc_fresh() -> bool:
        server.post_ticks([{"symbol": "BTC-USD", "price": "67100.00"}])
        return bool(api_row("ETH-USD")["stale"]) and not api_row("BTC-USD")["stale"]

    eventually(keep_btc_fresh, "ETH-USD stale at the server, BTC-USD not", 30)

    def marks() -> tuple[bool, bool]:
        server.post_ticks([{"symbol": "BTC-USD", "price": "67100.00"}])
        return (
            browser.page.is_visible("#board .row:nth-child(2) .stale"),
            browser.page.is_visible("#board .row:nth-child(1) .stale"),
        )

    eventually(lambda: marks() == (True, False), "the stale mark on ETH-USD only", 15)
    assert browser.page.get_attribute("#board .row:nth-child(2)", "data-stale") == "true"
    # A tick brings it back.
    server.post_ticks([{"symbol": "ETH-USD", "price": "3502.0"}])
    eventually(lambda: not api_row("ETH-USD")["stale"], "ETH-USD fresh at the server", 5)
    eventually(
        lambda: browser.page.is_hidden("#board .row:nth-child(2) .stale"), "the mark gone", 15
    )


def test_the_chart_library_is_vendored_and_credited(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols=SYMBOLS)
    open_page(browser, server, "?symbols=BTC-USD")
    # TradingView's attribution notice and a link to tradingview.com, as the licence asks.
    shown = browser.page.text_content("#attribution") or ""
    for line in NOTICE.read_text(encoding="utf-8").splitlines():
        assert line.strip() in shown
    links = browser.page.eval_on_selector_all("#attribution a", "(as) => as.map((a) => a.href)")
    assert "https://www.tradingview.com/" in links
    for href in links[1:]:
        with urllib.request.urlopen(href) as response:
            assert response.status == 200
    # From our own origin, pinned: no CDN, and no script until a chart opens.
    assert browser.page.evaluate("() => window.LightweightCharts") is None
    vendored = ROOT / "ticker/static/vendor/lightweight-charts.standalone.production.js"
    version = (ROOT / "ticker/static/vendor/lightweight-charts.VERSION").read_text().split()[1]
    assert f"Lightweight Charts™ v{version}" in vendored.read_text(encoding="utf-8")[:200]
    assert f"**{version}** (Apache-2.0)" in (ROOT / "README.md").read_text(encoding="utf-8")
    browser.page.click("#board .row:first-child")
    eventually(lambda: browser.page.evaluate("() => window.LightweightCharts?.version()"), "lib")
    assert browser.page.evaluate("() => window.LightweightCharts.version()") == version
    scripts = browser.page.eval_on_selector_all("script[src]", "(s) => s.map((e) => e.src)")
    assert all(src.startswith(server.base + "/static/") for src in scripts), scripts
    # The library's own logo would need an inline style our policy refuses: it is off.
    assert browser.page.locator("#tv-attr-logo").count() == 0


def test_screenshot_of_the_detail_view_for_the_readme(
    serve: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    update = os.environ.get("UPDATE_SCREENSHOT") == "1"
    screenshot = README_SCREENSHOT if update else tmp_path / "detail.png"
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "AAPL"]
    server = serve(symbols=",".join(symbols), tick_interval=0.2, seed=7)
    start = minute_ago(5 * 110)
    ticks = [t for t in history("BTC-USD", start, 5 * 108, seed=11) if t["ts"] < iso(minute_ago(3))]
    server.post_ticks(ticks)
    open_page(browser, server, "?symbols=" + ",".join(symbols) + "&detail=BTC-USD&interval=5m")
    wait_detail(browser, "BTC-USD", "5m")
    eventually(lambda: all(browser.ids(s) for s in symbols), "every row with ticks", 30)
    browser.page.set_viewport_size({"width": 1100, "height": 900})
    box = browser.page.locator("#detail-chart").bounding_box()
    assert box
    browser.page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.4)
    eventually(lambda: browser.page.get_attribute("#detail-readout", "data-start"), "read-out")
    browser.page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 20_000
