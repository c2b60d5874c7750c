"""The streams of one process: their ``TICKER_MAX_STREAMS`` slots, what they sent, stuck writes.

Every open stream holds a :class:`Slot` from :meth:`Streams.acquire` until it
ends, whichever write path serves it, and gives it back exactly once.  While a
stream's write is blocked on a client that stopped reading, its
:class:`Writer` says since when; the follower's pulse calls
:meth:`Streams.sweep`, which cuts off every client blocked for longer than
:func:`write_timeout`.  That is the one write timeout: a timer per write would
cost more than the write with tens of thousands of streams.
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("ticker.stream")


def write_timeout(heartbeat: float) -> float:
    """Return how long a write may block before the client counts as gone."""
    return max(2.0, 4 * heartbeat)


def shutting(sock: _socket.socket | None) -> Callable[[], None]:
    """Return how to cut a client off: shut its socket down, which wakes a blocked write."""

    def abort() -> None:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    return abort


class Writer:
    """A stream's writes: since when the current one is blocked, and how to cut it off."""

    __slots__ = ("abort", "since", "stalled")

    def __init__(self, abort: Callable[[], None]) -> None:
        self.abort = abort
        self.since: float | None = None  # None: no write in progress
        self.stalled = False  # the sweep cut this client off


class Slot:
    """One open stream's place among the process's streams, given back once, with a log line."""

    __slots__ = ("closed", "ended", "on_close", "request_id", "started", "streams", "writer")

    def __init__(self, streams: Streams, request_id: str) -> None:
        self.streams = streams
        self.request_id = request_id
        self.started = time.monotonic()
        self.ended = "client gone"  # until the stream says otherwise
        self.closed = False
        self.writer: Writer | None = None
        self.on_close: Callable[[float], None] | None = None  # told the stream's seconds

    def watch(self, abort: Callable[[], None]) -> Writer:
        """Register the stream's writes with the sweep; ``abort`` cuts the client off."""
        self.writer = Writer(abort)
        self.streams.writers.add(self.writer)
        return self.writer

    def close(self, ended: str | None = None) -> None:
        """Give the slot back (once), saying why the stream ended."""
        if self.closed:
            return
        self.closed = True
        streams = self.streams
        seconds = time.monotonic() - self.started
        if ended is not None:
            self.ended = ended
        if self.writer is not None:
            if self.writer.stalled:
                self.ended = "stalled"
            streams.writers.discard(self.writer)
        streams.release()
        logger.info(
            "stream closed",
            extra={
                "request_id": self.request_id,
                "ended": self.ended,
                "seconds": round(seconds, 3),
                "open": streams.open,
            },
        )
        if self.on_close is not None:
            self.on_close(seconds)


class Streams:
    """The streams of one process: the slots, their counters and their writes in progress.

    The counters serve ``/healthz``; ``/metrics`` subclasses the hooks.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.writers: set[Writer] = set()
        self.open = 0
        self.sent = 0  # tick messages written, replayed or live
        self.replayed = 0  # of those, sent while catching up after a last id
        self.resets: dict[str, int] = {}
        self.fallbacks = 0  # times a stream fell below the hub and read the log
        self._lock = threading.Lock()

    def acquire(self, request_id: str) -> Slot | None:
        """Take a slot for a new stream if one is free."""
        with self._lock:
            if self.open >= self.limit:
                return None
            self.open += 1
            self.on_open()
        return Slot(self, request_id)

    def release(self) -> None:
        """Give a slot back (:meth:`Slot.close` does)."""
        with self._lock:
            self.open -= 1
            self.on_close()

    def sweep(self, max_block: float) -> int:
        """Cut off the clients whose write has blocked for over ``max_block`` seconds."""
        now = time.monotonic()
        stuck = [w for w in list(self.writers) if w.since is not None and now - w.since > max_block]
        for writer in stuck:
            writer.since = None
            writer.stalled = True
            writer.abort()
        return len(stuck)

    def on_pulse(self, max_block: float) -> None:
        """Run on every pulse of the follower: sweep blocked writes, then flush counters."""
        self.sweep(max_block)
        self.flush()

    def flush(self) -> None:
        """Publish counters kept since the last flush (``/metrics`` overrides it)."""

    def on_open(self) -> None:
        """Note that a stream opened."""

    def on_close(self) -> None:
        """Note that a stream closed."""

    def on_sent(self, count: int, last_ts: int | None, replay: bool, writes: int = 1) -> None:
        """Note ``count`` tick messages written in ``writes`` writes.

        ``last_ts`` is the tick time of the newest message of each write.
        """
        self.sent += count
        if replay:
            self.replayed += count

    def on_reset(self, reason: str) -> None:
        """Note a ``reset`` sent for ``reason``."""
        self.resets[reason] = self.resets.get(reason, 0) + 1

    def on_fallback(self) -> None:
        """Note a stream that fell behind the hub and is served from the log."""
        self.fallbacks += 1
