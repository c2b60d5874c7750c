"""The ticker page in a real browser (Debian's chromium, driven by playwright) on real gunicorn.

The assertions read what the page holds (``window.tickerState``, the rows it shows)
and compare it with the log in the database, never with what our server says.
"""

from __future__ import annotations

import os
import struct
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fakes import SQLITE_ONLY, LogWriter, eventually, log_ids
from tests.pages import Browser, kill_hard, open_page
from tests.servers import Server
from ticker import ROOT

pytestmark = pytest.mark.server

# The README's picture; `make test` leaves it alone unless UPDATE_SCREENSHOT=1.
README_SCREENSHOT = ROOT / "docs" / "page.png"


@SQLITE_ONLY
def test_page_shows_latest_prices_and_follows_added_and_removed_symbols(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols="BTC-USD,ETH-USD,AAPL,EUR-USD")
    server.post_ticks(
        [
            {"symbol": "BTC-USD", "price": "67012.3"},
            {"symbol": "AAPL", "price": "230"},
            {"symbol": "ETH-USD", "price": "3501.5"},
            {"symbol": "BTC-USD", "price": "67012.35"},
            {"symbol": "AAPL", "price": "231.25"},
            {"symbol": "EUR-USD", "price": "1.0846"},
        ]
    )
    with urllib.request.urlopen(server.base + "/?symbols=BTC-USD") as response:
        policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy

    open_page(browser, server, "?symbols=btc-usd,AAPL")
    assert browser.rows() == ["BTC-USD", "AAPL"]
    # The price is shown to the symbol's precision: the most decimals it has come with.
    eventually(lambda: browser.row_text("BTC-USD", "price") == "67,012.35", "BTC-USD price")
    eventually(lambda: browser.row_text("AAPL", "price") == "231.25", "AAPL price")
    # The change is the server's 24-hour one, its decimal strings as given.
    assert browser.row_text("AAPL", "change") == "+1.25 (+0.54%)"

    server.post_ticks([{"symbol": "BTC-USD", "price": "67100"}])
    eventually(lambda: browser.row_text("BTC-USD", "price") == "67,100.00", "live BTC-USD")
    stats = {r["symbol"]: r["stats"] for r in server.get("/api/symbols")["symbols"]}["BTC-USD"]
    assert (stats["change"], stats["change_pct"]) == ("87.7", "0.13")
    # Read again within a few seconds (STATS_EVERY in ticker.js).
    eventually(lambda: browser.row_text("BTC-USD", "change") == "+87.7 (+0.13%)", "new stats", 8)
    assert browser.page.get_attribute("#board .row:first-child", "data-dir") == "up"
    assert browser.row_text("BTC-USD", "updated")

    browser.page.select_option("#add-symbol", "ETH-USD")
    browser.page.click("#add-button")
    eventually(lambda: browser.url_symbols() == ["BTC-USD", "AAPL", "ETH-USD"], "URL with ETH")
    assert browser.rows() == ["BTC-USD", "AAPL", "ETH-USD"]
    eventually(lambda: browser.row_text("ETH-USD", "price") == "3,501.5", "ETH-USD price")

    browser.page.click("#board .row:nth-child(2) .remove")
    eventually(lambda: browser.url_symbols() == ["BTC-USD", "ETH-USD"], "URL without AAPL")
    assert browser.rows() == ["BTC-USD", "ETH-USD"]
    assert browser.state("symbols") == ["BTC-USD", "ETH-USD"]
    options = browser.page.locator("#add-symbol option").all_text_contents()
    assert options == ["AAPL", "EUR-USD"]

    # The stream was reopened for the new set: ETH-USD ticks arrive, AAPL's are not shown.
    server.post_ticks([{"symbol": "AAPL", "price": "240"}, {"symbol": "ETH-USD", "price": "3600"}])
    eventually(lambda: browser.row_text("ETH-USD", "price") == "3,600.0", "live ETH-USD")
    assert browser.rows() == ["BTC-USD", "ETH-USD"]
    browser.wait_connection("live")

    browser.page.go_back()
    eventually(lambda: browser.rows() == ["BTC-USD", "AAPL", "ETH-USD"], "rows after Back")
    eventually(lambda: browser.row_text("AAPL", "price") == "240.00", "AAPL after Back")


def test_page_keeps_every_tick_through_a_server_killed_and_restarted(
    serve: Callable[..., Server],
    browser: Browser,
    db_url: str,
) -> None:
    config = {"source": "none", "symbols": "BTC-USD,AAPL,ETH-USD"}
    server = serve(**config)
    server.post_ticks([{"symbol": s, "price": "100.00"} for s in ["BTC-USD", "AAPL", "ETH-USD"]])
    open_page(browser, server, "?symbols=BTC-USD,AAPL")
    streams: list[Any] = []
    browser.page.on("request", lambda r: streams.append(r) if "/stream" in r.url else None)
    writer = LogWriter(db_url, ["BTC-USD", "ETH-USD", "AAPL"])
    writer.start()
    try:
        eventually(lambda: (browser.ids("AAPL") or [0])[-1] > 3, "live ticks before the kill")
        kill_hard(server)
        written_at_kill = len(writer.ids)
        browser.wait_connection("reconnecting", timeout=10)
        assert "Reconnecting" in (browser.page.text_content("#conn") or "")
        held_while_down = browser.state("lastId")
        eventually(lambda: len(writer.ids) >= written_at_kill + 30, "ticks written while down")
        assert browser.connection() == "reconnecting"
        serve(port=server.port, **config)
        eventually(lambda: browser.state("lastId") > held_while_down, "ticks after restart", 20)
    finally:
        written = writer.finish()
    browser.wait_connection("live")
    assert browser.state("replayed") > 0  # it resumed from its last id, not from a snapshot
    assert browser.state("resets") == 0
    # The browser's own reconnect resumed: it sent the last id it had seen.
    resumed_from = [r.all_headers().get("last-event-id") for r in streams]
    assert any(v and 0 < int(v) <= held_while_down for v in resumed_from), resumed_from
    for symbol in ["BTC-USD", "AAPL"]:
        held = browser.wait_chart_matches_log(db_url, symbol)
        assert set(held) >= {i for i in written if i in set(log_ids(db_url, [symbol]))}
    assert browser.ids("ETH-USD") is None


def test_reload_mid_stream_resumes_without_a_hole(
    serve: Callable[..., Server], browser: Browser, db_url: str
) -> None:
    server = serve(source="none", symbols="BTC-USD,AAPL,ETH-USD")
    server.post_ticks([{"symbol": s, "price": "10.5"} for s in ["BTC-USD", "AAPL", "ETH-USD"]])
    open_page(browser, server, "?symbols=BTC-USD,AAPL")
    assert browser.state("resumedFrom") is None  # a fresh tab starts from a snapshot
    writer = LogWriter(db_url, ["BTC-USD", "AAPL", "ETH-USD"])
    writer.start()
    missed: list[int] = []

    def post_while_reloading(route: Any) -> None:
        # The old page is gone and the new one has not opened its stream yet.
        if not missed:
            missed.extend(server.post_ticks([{"symbol": "AAPL", "price": "11.25"}] * 20))
        route.continue_()

    try:
        eventually(lambda: len(browser.ids("BTC-USD") or []) > 5, "live ticks before reload")
        seen_before = browser.state("lastId")
        browser.page.route(lambda url: "/stream?" in url, post_while_reloading)
        browser.page.reload()
        browser.wait_connection("live")
        written_at_live = len(writer.ids)
        eventually(lambda: len(writer.ids) >= written_at_live + 15, "ticks written once live")
    finally:
        writer.finish()
    assert missed, "the reloaded page did not open a stream"
    resumed = browser.state("resumedFrom")
    assert resumed is not None and resumed >= seen_before
    assert resumed < missed[0]
    # The missed ticks reach the page in the replay, or just after it as live
    # ticks when the worker's hub had not read them yet: either way the chart
    # holds every one.
    for symbol in ["BTC-USD", "AAPL"]:
        browser.wait_chart_matches_log(db_url, symbol)


@SQLITE_ONLY
def test_a_log_that_cannot_resume_the_page_shows_a_reset_notice(
    serve: Callable[..., Server],
    browser: Browser,
    tmp_path: Path,
) -> None:
    config = {"source": "none", "symbols": "BTC-USD,AAPL"}
    server = serve(**config)
    server.post_ticks([{"symbol": "BTC-USD", "price": f"{100 + i}.5"} for i in range(30)])
    open_page(browser, server, "?symbols=BTC-USD")
    assert browser.page.is_hidden("#notice")
    kill_hard(server)
    browser.wait_connection("reconnecting")
    # Back on an empty log: the page's last id is ahead of the new head.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    again = serve(port=server.port, database_url=fresh, **config)
    again.post_ticks([{"symbol": "BTC-USD", "price": "7.25"}, {"symbol": "AAPL", "price": "1"}])
    browser.page.wait_for_selector("#notice", state="visible")
    assert "Missed data, showing latest" in (browser.page.text_content("#notice") or "")
    browser.wait_connection("live")
    assert browser.state("resets") == 1
    browser.wait_chart_matches_log(fresh, "BTC-USD")
    eventually(lambda: browser.row_text("BTC-USD", "price") == "7.25", "the new log's price")


@SQLITE_ONLY
def test_markup_in_the_url_is_shown_as_text(serve: Callable[..., Server], browser: Browser) -> None:
    # Symbols cannot hold markup any more, but the page quotes what the URL asked
    # for when it is not tracked: that text must stay text.
    server = serve(source="none", symbols="BTC-USD,AAPL")
    server.post_ticks([{"symbol": "BTC-USD", "price": "1.5"}])
    asked = ["BTC-USD", "<img src=x onerror=alert(1)>", "<b>bold</b>", "&amp;"]
    open_page(browser, server, "?symbols=" + ",".join(quote(s, safe="") for s in asked))
    browser.page.wait_for_selector("#notice", state="visible")
    shown = browser.page.text_content("#notice-text")
    assert shown == "Not tracked: <IMG SRC=X ONERROR=ALERT(1)>, <B>BOLD</B>, &AMP;."
    assert browser.page.locator("#notice-text").evaluate("(n) => n.children.length") == 0
    assert browser.page.locator("img, b, [onerror]").count() == 0
    # The page goes on with what it can show, and the URL says so.
    assert browser.rows() == ["BTC-USD"]
    assert browser.url_symbols() == ["BTC-USD"]
    eventually(lambda: browser.row_text("BTC-USD", "price") == "1.5", "BTC-USD price")


def png_size(path: Path) -> tuple[int, int]:
    """Return the width and height that a PNG file's header gives."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is no PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@SQLITE_ONLY
def test_screenshot_of_the_page_for_the_readme(
    serve: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    update = os.environ.get("UPDATE_SCREENSHOT") == "1"
    screenshot = README_SCREENSHOT if update else tmp_path / "page.png"
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "AAPL", "NVDA", "EUR-USD"]
    server = serve(symbols=",".join(symbols), tick_interval=0.05, seed=7)
    browser.page.set_viewport_size({"width": 1100, "height": 480})
    open_page(browser, server, "?symbols=" + ",".join(symbols))
    eventually(
        lambda: all(len(browser.ids(s) or []) >= 60 for s in symbols), "charts with 60 ticks", 30
    )
    assert browser.rows() == symbols
    assert all(browser.row_text(s, "price")[:1].isdigit() for s in symbols)
    height = browser.page.evaluate("() => document.documentElement.scrollHeight")
    browser.page.screenshot(path=str(screenshot), full_page=True)
    # The whole page, as wide as the window it was shown in.
    assert png_size(screenshot) == (1100, max(480, height))


PHONE_PRICES = {
    "BTC-USD": ("67012.35", "67,012.35"),
    "ETH-USD": ("3501.5", "3,501.5"),
    "SOL-USD": ("142.17", "142.17"),
    "AAPL": ("231.25", "231.25"),
    "NVDA": ("1234.5", "1,234.5"),
    "EUR-USD": ("1.0846", "1.0846"),
}

# Where each row's symbol and price stand, and whether the page scrolls sideways.
PHONE_LAYOUT = """() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    background: getComputedStyle(document.body).backgroundColor,
    rows: [...document.querySelectorAll("#board .row")].map((row) => {
        const box = (el) => {
            const r = el.getBoundingClientRect();
            return {left: r.left, right: r.right, width: r.width, height: r.height,
                    cut: el.scrollWidth > el.clientWidth};
        };
        return {symbol: row.querySelector(".sym").textContent,
                sym: box(row.querySelector(".sym")), price: box(row.querySelector(".price"))};
    }),
})"""


@SQLITE_ONLY
def test_on_a_phone_every_row_shows_its_price_without_scrolling_sideways(
    serve: Callable[..., Server], browser: Browser
) -> None:
    server = serve(source="none", symbols=",".join(PHONE_PRICES))
    server.post_ticks([{"symbol": s, "price": p} for s, (p, _) in PHONE_PRICES.items()])
    light = None
    for scheme in ["light", "dark"]:
        browser.page.set_viewport_size({"width": 390, "height": 844})
        browser.page.emulate_media(color_scheme=scheme)
        open_page(browser, server, "?symbols=" + ",".join(PHONE_PRICES))
        for symbol, (_, shown) in PHONE_PRICES.items():
            eventually(lambda s=symbol, p=shown: browser.row_text(s, "price") == p, symbol)
        layout = browser.page.evaluate(PHONE_LAYOUT)
        assert layout["innerWidth"] == 390
        assert layout["scrollWidth"] <= 390, "the page scrolls sideways on a phone"
        assert [r["symbol"] for r in layout["rows"]] == list(PHONE_PRICES)
        for row in layout["rows"]:
            for part in ("sym", "price"):
                where = row[part]
                assert where["width"] > 0 and where["height"] > 0, (row["symbol"], part)
                assert where["left"] >= 0 and where["right"] <= 390, (row["symbol"], part, where)
                assert not where["cut"], (row["symbol"], part, "cut off")
        if light is None:
            light = layout["background"]
        else:
            assert layout["background"] != light, "the dark scheme looks like the light one"
