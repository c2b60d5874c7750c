"""Alpaca on 127.0.0.1 for the tests: its recorded payloads, answers built from them.

The HTTP side is a :class:`tests.fakes.FakeExchange` scripted with these
answers (the data API's latest trades and the trading API's clock on one
port); the stream is :class:`FakeStream` (the ``websockets`` package).  The
payloads are in ``tests/payloads/alpaca`` (their README says where each shape
comes from).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import deque
from functools import cache
from pathlib import Path
from typing import Any

import msgpack
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from tests.fakes import Answer, ok
from ticker.events import format_ts, parse_ts

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


DROP = "drop"  # a step of the fake stream: the connection breaks


def trade_frame(symbol: str, trade_id: int, price: float, size: int, when: str) -> bytes:
    """Return one msgpack frame with one trade, as Alpaca sends it to alpaca-py."""
    message = {**payload("stream.json")["trade"], "S": symbol, "i": trade_id, "p": price, "s": size}
    message["t"] = msgpack.Timestamp.from_unix_nano(parse_ts_ns(when))
    return bytes(msgpack.packb([message]))


def parse_ts_ns(when: str) -> int:
    """Return an RFC 3339 UTC time with up to nine fractional digits as nanoseconds."""
    whole, _, fraction = when.rstrip("Z").partition(".")
    seconds = parse_ts(whole + "Z") // 1_000_000
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


class FakeStream:
    """Alpaca's real-time stock stream on 127.0.0.1, speaking msgpack as alpaca-py asks.

    Each connection gets ``connected``, must authenticate with ``KEYS`` and
    subscribe, then is sent the steps the test queues (a frame, or ``DROP`` to
    break this connection; the next one carries on with the queue).
    """

    def __init__(self) -> None:
        self.steps: deque[bytes | str] = deque()
        self.lock = threading.Lock()
        self.connects = 0
        self.content_types: list[str | None] = []
        self.subscribed: list[list[str]] = []
        self.closed = threading.Event()
        self.server = serve(self._handle, "127.0.0.1", 0, compression=None)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def send(self, *steps: bytes | str) -> None:
        with self.lock:
            self.steps.extend(steps)

    def _handle(self, connection: ServerConnection) -> None:
        self.connects += 1
        request = connection.request
        self.content_types.append(None if request is None else request.headers.get("Content-Type"))
        stream = payload("stream.json")
        connection.send(msgpack.packb(stream["connected"]))
        auth = msgpack.unpackb(connection.recv(timeout=10))
        if (auth.get("key"), auth.get("secret")) != tuple(KEYS.values()):
            connection.send(msgpack.packb(stream["auth_failed"]))
            return
        connection.send(msgpack.packb(stream["authenticated"]))
        subscribe = msgpack.unpackb(connection.recv(timeout=10))
        self.subscribed.append(list(subscribe.get("trades", [])))
        connection.send(
            msgpack.packb([{**stream["subscription"][0], "trades": subscribe["trades"]}])
        )
        while not self.closed.is_set():
            with self.lock:
                step = self.steps.popleft() if self.steps else None
            if step is None:
                time.sleep(0.01)
            elif step == DROP:
                return  # the handler's end closes the connection
            elif not self._sent(connection, step):
                return

    def _sent(self, connection: ServerConnection, frame: bytes) -> bool:
        """Send ``frame``; if the client has gone, keep it first in line for the next one."""
        try:
            connection.send(frame)
        except ConnectionClosed:
            with self.lock:
                self.steps.appendleft(frame)
            return False
        return True

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
