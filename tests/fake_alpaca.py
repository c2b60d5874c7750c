"""Alpaca on 127.0.0.1 for the tests: its recorded payloads, answers built from them.

The HTTP side is a :class:`tests.fakes.FakeExchange` scripted with these
answers (the data API's latest trades and the trading API's clock on one
port).  The payloads are in ``tests/payloads/alpaca`` (their README says
where each shape comes from).
"""

from __future__ import annotations

import copy
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

from tests.fakes import Answer, ok
from ticker.events import format_ts

PAYLOADS = Path(__file__).parent / "payloads" / "alpaca"
TRADES = "/v2/stocks/trades/latest"
CLOCK = "/v2/clock"
KEYS = {"APCA_API_KEY_ID": "PKTEST", "APCA_API_SECRET_KEY": "secret"}


@cache
def _text(name: str) -> str:
    return (PAYLOADS / name).read_text()


def payload(name: str) -> Any:
    """Return a recorded payload, parsed (numbers as Python numbers: only for reading)."""
    return json.loads(_text(name))


def raw(name: str) -> str:
    """Return a recorded payload's text, its numbers exactly as written."""
    return _text(name)


def trade(price: str, size: str, when: str, trade_id: int) -> str:
    """Return one trade object in Alpaca's shape, the price and size as JSON number text."""
    return (
        f'{{"t": "{when}", "x": "V", "p": {price}, "s": {size}, "c": ["@"], '
        f'"i": {trade_id}, "z": "C"}}'
    )


def latest(**trades: str) -> Answer:
    """Answer latest trades with the given trade objects (``trade``), by symbol."""
    body = ", ".join(f'"{symbol.replace("_", ".")}": {t}' for symbol, t in trades.items())
    return ok('{"trades": {' + body + "}}")


def hours(is_open: bool, opens_in: float = 3600.0, closes_in: float = 7200.0) -> Answer:
    """Answer the clock: open or not, the next open and close so many seconds from now."""
    answer = copy.deepcopy(payload("clock_open.json"))
    now = time.time()
    answer.update(
        is_open=is_open,
        timestamp=format_ts(int(now * 1e6)),
        next_open=format_ts(int((now + opens_in) * 1e6)),
        next_close=format_ts(int((now + closes_in) * 1e6)),
    )
    return ok(answer)


def closed() -> Answer:
    """Answer the clock of a weekend: closed, opening in two days."""
    return hours(False, opens_in=2 * 86400, closes_in=2 * 86400 + 6.5 * 3600)
