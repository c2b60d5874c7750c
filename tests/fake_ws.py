"""A fake venue on 127.0.0.1: a trade stream over WebSocket and its REST answers on one port.

ccxt's exchanges are re-pointed onto one base URL (``TICKER_SOURCE_URL``), so
one ``websockets`` server answers both: plain GETs (``process_request``) get
the answers of ``fake_exchange.FakeVenue`` (the recorded markets and its
scriptable failures: ``venue.rest.script(...)``), except the recent trades,
which come from this venue's own history; upgrades get the trade stream.  It
speaks two venues' documented frames, as ccxt.pro subscribes to them:

- Binance spot: ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": N}``,
  answered ``{"result": null, "id": N}``; each trade
  ``{"e": "trade", "s": "BTCUSDT", "t": id, "p": price, "q": size, "T": ms, ...}``;
  REST ``/api/v3/trades`` (the recent trades; ids are consecutive per symbol,
  so a gap is filled from there).
- Coinbase Advanced Trade: ``{"type": "subscribe", "channel": "market_trades",
  "product_ids": [...]}``; a ``snapshot`` of the trades it still has, newest
  first, then one ``update`` per trade.

The venue remembers every trade it published ("still has" them: REST and the
snapshot serve them) and sends each to the connections open at the time, so a
trade published while nobody listened, or :meth:`FakeVenue.withhold`-ed, is
only in the history.  Scripts: :meth:`drop` (close every connection),
``silent`` (accept and subscribe, send nothing), :meth:`send_raw` (malformed
frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.fake_exchange import FakeVenue as RecordedVenue
from tests.fake_exchange import ok
from tests.fakes import Answer
from tests.fakes import Request as RestRequest

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: trade times are BASE_MS + id


@dataclass(frozen=True)
class VenueTrade:
    """A trade as the venue has it: its market id (``BTCUSDT``, ``BTC-USD``) and exact strings."""

    market: str
    trade_id: int
    price: str
    size: str

    @property
    def ms(self) -> int:
        return BASE_MS + self.trade_id

    @property
    def ts_us(self) -> int:
        return self.ms * 1000


class Binance:
    """Binance spot's frames and REST payloads."""

    name = "binance"

    def rest(self, path: str, query: dict[str, list[str]], venue: FakeVenue) -> Any:
        if path == "/api/v3/trades":  # the most recent trades, oldest first
            limit = int(query.get("limit", ["500"])[0])
            found = venue.history(query["symbol"][0])[-limit:]
            return [
                {
                    "id": t.trade_id,
                    "price": t.price,
                    "qty": t.size,
                    "quoteQty": "0",
                    "time": t.ms,
                    "isBuyerMaker": True,
                    "isBestMatch": True,
                }
                for t in found
            ]
        return None

    def on_message(self, message: dict[str, Any], venue: FakeVenue) -> tuple[list[str], list[str]]:
        """Answer a client message; return the markets it subscribed and the frames to send."""
        if message.get("method") != "SUBSCRIBE":
            return [], []
        markets = [p.split("@")[0].upper() for p in message.get("params", [])]
        return markets, [json.dumps({"result": None, "id": message.get("id")})]

    def frames(self, trade: VenueTrade) -> str:
        return json.dumps(
            {
                "e": "trade",
                "E": trade.ms + 1,
                "s": trade.market,
                "t": trade.trade_id,
                "p": trade.price,
                "q": trade.size,
                "T": trade.ms,
                "m": True,
                "M": True,
            }
        )

    def snapshot(self, markets: list[str], venue: FakeVenue) -> list[str]:
        return []  # Binance replays nothing on subscribe: the REST fill does


class Coinbase:
    """Coinbase Advanced Trade's frames and REST payloads."""

    name = "coinbase"

    def rest(self, path: str, query: dict[str, list[str]], venue: FakeVenue) -> Any:
        return None  # the recorded payloads answer

    def on_message(self, message: dict[str, Any], venue: FakeVenue) -> tuple[list[str], list[str]]:
        if message.get("type") != "subscribe" or message.get("channel") != "market_trades":
            return [], []
        markets = [str(p) for p in message.get("product_ids", [])]
        return markets, [_coinbase_frame("subscriptions", [], {"market_trades": markets})]

    def frames(self, trade: VenueTrade) -> str:
        return _coinbase_frame("market_trades", [{"type": "update", "trades": [_cb(trade)]}])

    def snapshot(self, markets: list[str], venue: FakeVenue) -> list[str]:
        frames = []
        for market in markets:
            had = venue.history(market)[-50:][::-1]  # recent trades, newest first
            if not had:
                continue  # ccxt 4.5.90 cannot read an empty snapshot (it names no product)
            frames.append(
                _coinbase_frame(
                    "market_trades", [{"type": "snapshot", "trades": [_cb(t) for t in had]}]
                )
            )
        return frames


Dialect = Binance | Coinbase


class FakeVenue:
    """Serve a venue's REST and trade stream on 127.0.0.1 from a thread with its own loop."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.rest = RecordedVenue(dialect.name)  # the recorded REST answers, and their scripts
        self.silent = False  # accept and subscribe, but send no frame
        self.requests: list[str] = []  # REST paths asked, in order
        self.subscribed: list[list[str]] = []  # the markets of each subscription
        self.connections: dict[ServerConnection, list[str]] = {}  # open -> markets subscribed
        self.opened = 0
        self._history: dict[str, list[VenueTrade]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    # -- the test's side -----------------------------------------------------

    def publish(self, *trades: VenueTrade) -> None:
        """Keep ``trades`` in the history and send each to the connections subscribed to it."""
        self._remember(trades)
        if not self.silent:
            self._call(self._send_trades, trades)

    def withhold(self, *trades: VenueTrade) -> None:
        """Keep ``trades`` in the history only: the stream skips them (a gap)."""
        self._remember(trades)

    def send_raw(self, text: str) -> None:
        """Send ``text`` as one frame to every open connection (e.g. a malformed one)."""
        self._call(self._send_text, text)

    def drop(self) -> None:
        """Close every connection, as a venue restarting would."""
        self._call(self._close_all)

    def history(self, market: str) -> list[VenueTrade]:
        with self._lock:
            return list(self._history.get(market, []))

    def subscribers(self) -> int:
        """Return how many open connections have subscribed."""
        return sum(1 for markets in list(self.connections.values()) if markets)

    def close(self) -> None:
        self.rest.close()
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- the server's side ---------------------------------------------------

    def _remember(self, trades: tuple[VenueTrade, ...]) -> None:
        with self._lock:
            for trade in trades:
                self._history.setdefault(trade.market, []).append(trade)

    def _call(self, coroutine: Callable[..., Any], *args: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine(*args), self._loop).result(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await serve(
                self._handle, "127.0.0.1", 0, process_request=self._rest, ping_interval=None
            )
            ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def _rest(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        self.requests.append(url.path)
        answer = self._answer(url.path, query)
        self.rest.record(RestRequest(url.path, query, answer.status))
        headers = Headers([*answer.headers.items(), ("Connection", "close")])
        headers["Content-Length"] = str(len(answer.body))
        reason = HTTPStatus(answer.status).phrase
        return Response(answer.status, reason, headers, answer.body)

    def _answer(self, path: str, query: dict[str, list[str]]) -> Answer:
        """Answer what the test scripted for ``path``, else the live trades, else the recording."""
        with self.rest.lock:
            scripted = self.rest.scripts.get(path)
            if scripted:
                return scripted.popleft()
        payload = self.dialect.rest(path, query, self)
        return ok(payload) if payload is not None else self.rest.next_answer(path, query)

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections[connection] = []
        self.opened += 1
        try:
            async for text in connection:
                markets, replies = self.dialect.on_message(json.loads(text), self)
                if self.silent:
                    replies = []
                for reply in replies:
                    await connection.send(reply)
                if markets:
                    self.subscribed.append(markets)
                    if not self.silent:
                        for frame in self.dialect.snapshot(markets, self):
                            await connection.send(frame)
                    self.connections[connection] = self.connections[connection] + markets
        except Exception:
            pass  # the client went away
        finally:
            self.connections.pop(connection, None)

    async def _send_trades(self, trades: tuple[VenueTrade, ...]) -> None:
        for trade in trades:
            for connection, markets in list(self.connections.items()):
                if trade.market in markets:
                    await _quietly(connection.send(self.dialect.frames(trade)))

    async def _send_text(self, text: str) -> None:
        for connection, markets in list(self.connections.items()):
            if markets:
                await _quietly(connection.send(text))

    async def _close_all(self) -> None:
        for connection in list(self.connections):
            connection.transport.abort()  # no close frame: the client sees the line drop

    async def _shutdown(self) -> None:
        await self._close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _quietly(sending: Any) -> None:
    with contextlib.suppress(Exception):  # that connection is closing
        await sending


def _cb(trade: VenueTrade) -> dict[str, Any]:
    time = datetime.fromtimestamp(trade.ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return {
        "trade_id": str(trade.trade_id),
        "product_id": trade.market,
        "price": trade.price,
        "size": trade.size,
        "side": "BUY",
        "time": time + "Z",
    }


def _coinbase_frame(channel: str, events: list[Any], subscriptions: Any = None) -> str:
    frame: dict[str, Any] = {
        "channel": channel,
        "client_id": "",
        "timestamp": "2026-01-01T00:00:00.000000000Z",
        "sequence_num": 0,
        "events": events if subscriptions is None else [{"subscriptions": subscriptions}],
    }
    return json.dumps(frame)
