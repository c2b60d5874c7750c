"""ticker serve with the alpaca source on a closed market: the server and the page say closed.

gunicorn's workers each ask the fake Alpaca's clock; the page (chromium) marks
the stocks closed, not stale, while a symbol no source ticks stays stale.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fake_alpaca import CLOCK, KEYS, TRADES, closed, raw
from tests.fakes import Answer, FakeExchange, eventually, ok
from tests.pages import Browser, open_page
from tests.servers import Server

pytestmark = pytest.mark.server


@pytest.fixture
def closed_alpaca(exchange: FakeExchange, monkeypatch: pytest.MonkeyPatch) -> FakeExchange:
    """The fake Alpaca on a weekend, its keys and trading URL in the environment servers get."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APCA_API_BASE_URL", exchange.url)

    def answer(path: str, query: dict[str, list[str]]) -> Answer:
        return closed() if path == CLOCK else ok(raw("latest_trades.json"))

    exchange.then = answer
    return exchange


def test_a_closed_market_s_stocks_show_as_closed_not_stale(
    serve: Callable[..., Server], browser: Browser, closed_alpaca: FakeExchange
) -> None:
    server = serve(source="alpaca", source_url=closed_alpaca.url, symbols="AAPL,BRK.B,BTC-USD")

    def closing_prices() -> bool:
        return {r["symbol"]: r["tick"] is not None for r in symbols(server)} == {
            "AAPL": True,
            "BRK.B": True,
            "BTC-USD": False,
        }

    eventually(closing_prices, "the closing prices in the log")
    marks = {r["symbol"]: (r["closed"], r["stale"]) for r in symbols(server)}
    assert marks == {"AAPL": (True, False), "BRK.B": (True, False), "BTC-USD": (False, True)}
    upstream = server.get("/healthz")["producer"]["upstream"]
    assert upstream["market"] == "closed" and upstream["next_open"] is not None
    assert closed_alpaca.count(TRADES) == 1  # the closing prices once; then nothing is asked
    assert "source failed" not in server.log_text()  # closed is not an error, in any worker

    open_page(browser, server, "?symbols=AAPL,BTC-USD")

    def shown(row: int, mark: str) -> bool:
        return bool(browser.page.is_visible(f"#board .row:nth-child({row}) .{mark}"))

    eventually(lambda: shown(1, "closed") and shown(2, "stale"), "AAPL closed, BTC-USD stale")
    assert not shown(1, "stale")
    assert not shown(2, "closed")
    assert browser.page.get_attribute("#board .row:nth-child(1)", "data-closed") == "true"
    assert browser.page.get_attribute("#board .row:nth-child(1)", "data-stale") is None
    assert browser.row_text("AAPL", "price").replace(",", "") == "187.4300"


def symbols(server: Server) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = server.get("/api/symbols")["symbols"]
    return rows
