"""The ``alpaca:trades`` source: every IEX trade of the tracked stocks, streamed.

The connection is alpaca-py's ``StockDataStream`` (IEX feed): its handshake
(``connected``, then ``auth`` with the keys, ``authenticated``) and its
``subscribe`` message; the frames it receives are read here.  Its own run loop
is not used: it reconnects by itself on its own event loop, where the feed
machinery (:mod:`ticker.sources.feed`) already owns the thread, the loop, the
back-off, the silence and the deduplication by Alpaca's trade id ``i``.

Exact prices: alpaca-py asks for msgpack frames, in which Alpaca sends a
price as a float64.  A float64 has one shortest decimal that reads back as the
same float, and that is the price Alpaca meant (``187.43``, never
``187.43000000000001``), so ``p`` and ``s`` are written as ``repr`` gives
them; the trade time is read as integer nanoseconds, never a float.

Market hours: the stream is held only while the market is open (Alpaca's
clock, asked rarely) and this process holds the producer lease.  While the
market is closed there is no connection, so no silence to reconnect from and
no error; the free plan allows one stream connection per account, which this
leaves to the lease holder alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from decimal import Decimal
from typing import Any

import msgpack
from alpaca.data.enums import DataFeed
from alpaca.data.live import StockDataStream

from ticker.config import Settings
from ticker.errors import SourceError
from ticker.events import Event, Tick, exact_price, exact_size
from ticker.sources.alpaca.client import KEYS_HINT
from ticker.sources.alpaca.common import Stocks
from ticker.sources.feed import FeedSource
from ticker.sources.upstream import Trade, Upstream

DEFAULT_STREAM = "wss://stream.data.alpaca.markets"
#: Unless TICKER_SOURCE_SILENCE says otherwise: IEX can be quiet for minutes on
#: a less traded stock, and websockets' pings notice a dead connection within
#: 30 s anyway, so silence alone waits long.
SILENCE = 300.0


def silence_of(settings: Settings) -> float:
    """Return ``TICKER_SOURCE_SILENCE``, or ``SILENCE`` where it was left at its default."""
    default = next(f.default for f in fields(Settings) if f.name == "source_silence")
    return SILENCE if settings.source_silence == default else settings.source_silence


def stream_url(source_url: str | None) -> str:
    """Return the IEX stream's URL, on ``TICKER_SOURCE_URL``'s host when it is set."""
    if source_url is None:
        return f"{DEFAULT_STREAM}/v2/{DataFeed.IEX.value}"
    scheme, rest = source_url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v2/{DataFeed.IEX.value}"


def _number(value: object) -> str:
    """Return a msgpack number as the shortest decimal that is exactly it."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int | float):
        return format(Decimal(repr(value)), "f")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a number, got {type(value).__name__}")


class AlpacaUpstream(Upstream):
    """One connection to Alpaca's IEX stream, subscribed to the trades of the tracked stocks."""

    def __init__(self, stocks: Stocks, url: str, timeout: float) -> None:
        self.symbols = stocks.symbols
        self.stream = StockDataStream(
            stocks.key,
            stocks.secret,
            raw_data=True,
            feed=DataFeed.IEX,
            url_override=url,
            websocket_params={
                "ping_interval": 10,
                "ping_timeout": 20,
                "max_queue": 1024,
                "open_timeout": max(timeout, 5.0),
            },
        )
        # Registers the handler only (nothing runs yet): _send_subscribe_msg names them.
        self.stream.subscribe_trades(_ignore, *stocks.symbols)

    async def connect(self) -> None:
        """Connect, authenticate and subscribe with alpaca-py's handshake."""
        try:
            await self.stream._start_ws()
        except ValueError as exc:  # alpaca-py's "auth failed", "connected message not received"
            hint = f"; {KEYS_HINT}" if "auth" in str(exc) else ""
            raise ConnectionError(f"alpaca: the stream's handshake failed: {exc}{hint}") from None
        await self.stream._send_subscribe_msg()

    async def receive(self) -> Sequence[Any]:
        """Return the trades of the next frame; raise on the stream's error message.

        An unreadable frame is returned as it is: ``parse`` refuses it, and the
        feed counts it as malformed without dropping the connection.
        """
        connection: Any = self.stream._ws  # set by connect
        frame = await connection.recv()
        try:
            messages = msgpack.unpackb(frame, timestamp=2)  # times as integer nanoseconds
        except (ValueError, TypeError, msgpack.UnpackException):
            return [frame]
        if not isinstance(messages, list):
            messages = [messages]
        for message in messages:
            if isinstance(message, dict) and message.get("T") == "error":
                raise ConnectionError(
                    f"alpaca: the stream says {message.get('msg')} (code {message.get('code')})"
                )
        return [m for m in messages if not isinstance(m, dict) or m.get("T") == "t"]

    def parse(self, raw: Any) -> Trade:
        """Turn one trade message (``S``, ``i``, ``p``, ``s``, ``t``) into a trade."""
        if not isinstance(raw, dict):
            raise TypeError(f"a trade is a map, got {type(raw).__name__}")
        nanos = raw["t"]
        if not isinstance(nanos, int):
            raise TypeError(f"the trade time is a {type(nanos).__name__}")
        return Trade(
            self.symbols[raw["S"]],
            exact_price(_number(raw["p"])),
            exact_size(_number(raw["s"])),
            nanos // 1000,
            str(raw["i"]),
        )

    async def close(self) -> None:
        """Close the connection; never raise."""
        try:
            await self.stream.close()
        except Exception:  # closing a broken connection may fail: it is closed either way
            self.stream._ws = None


async def _ignore(trade: Any) -> None:
    """Stand in for the handler alpaca-py's subscription wants: ``receive`` reads the frames."""


class AlpacaTradesSource(FeedSource):
    """Trades of US stocks from Alpaca's IEX stream, while the market is open."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(
            "alpaca:trades", silence=silence_of(settings), backoff=settings.source_backoff
        )
        self.stocks = Stocks(settings, environ)
        self.timeout = self.stocks.timeout
        self.url = stream_url(settings.source_url)
        self.leading = False  # this process holds the producer lease
        self.streaming = False

    def upstream(self) -> Upstream:
        """Build one connection's upstream."""
        return AlpacaUpstream(self.stocks, self.url, self.timeout)

    def resume(self, latest: Sequence[Event]) -> None:
        """Hold the lease: the stream (re)opens at the next interval if the market is open.

        A stream still open from before is closed and its buffer dropped: the
        new one starts after the marks the producer restored from the log.
        """
        self._disconnect()
        self.leading = True

    def pause(self) -> None:
        """Let go of the stream: another process produces now."""
        self.leading = False
        self._disconnect()

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Return the trades received since the last interval; open or close with the market."""
        ticks = super().next_ticks(now_us)
        try:
            is_open = self.stocks.hours(self.health).is_open
        except SourceError as exc:  # the trades received still go to the log
            raise SourceError(str(exc), retry_after=exc.retry_after, ticks=ticks) from exc
        if is_open and self.leading and not self.streaming:
            self.streaming = True
            super().resume([])
        elif not is_open and self.streaming:
            self._disconnect()
            self._restored = dict(self._handed)  # reopen after the last trade handed on
        return ticks

    def _disconnect(self) -> None:
        self.streaming = False
        super().pause()

    def closed_symbols(self) -> frozenset[str]:
        """Return the tracked stocks while the market is closed."""
        return self.stocks.closed(self.health)

    def close(self) -> None:
        """Close the stream and the clock's session."""
        super().close()
        self.stocks.close()
