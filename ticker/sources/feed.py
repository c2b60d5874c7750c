"""A streamed source: a venue's trades received in a thread of their own, handed over per interval.

A venue's stream is an :class:`~ticker.sources.upstream.Upstream`
(``ccxttrades`` for ccxt.pro, the alpaca source for alpaca-py);
:class:`FeedSource` is the :class:`Source` the producer drives, the same for
every venue: subclass it and implement ``upstream()``, which builds a fresh
upstream for each connection.

The thread.  ``resume`` (this process took the producer lease) starts a
native thread running its own asyncio loop, so the upstream's asyncio code
never meets gevent's hub (under a monkey-patched worker the thread is started
with gevent's original ``start_new_thread``).  ``pause`` (the lease was lost)
and ``close`` cancel that loop's task: the connection closes.  In the thread:
connect, then receive until the stream breaks or stays silent for
``silence`` seconds, then close and reconnect after a jittered exponential
back-off (``backoff`` at most, never sooner than a ``Retry-After`` the venue
gave: ``Upstream.retry_after``).  Trades go into a bounded buffer (a
``deque``: appends and pops are atomic, no lock is shared with the hub);
past ``capacity`` they are dropped and counted.  The producer's
``next_ticks`` drains it once per interval, so a thousand trades a second cost
one write transaction per interval.

No trade twice, none lost that the venue still has.  Each symbol has a
:class:`~ticker.sources.marks.Mark`: the last trade taken (its id and time;
for a venue without sequential ids, also the ids taken at that time).  A
trade at or before the mark is a duplicate (a replay after a reconnect) and
is dropped and counted.
On a sequential venue a trade past ``mark.id + 1`` is a gap: logged, counted,
and filled through ``Upstream.fill`` before the trade itself is taken.
``checkpoint`` gives the marks of the trades the last ``next_ticks`` returned;
the producer writes them (``ticker.log.cursors``) in the same transaction
as those ticks, and at a take-over reads them back and calls ``restore`` before
``resume``.  So a new holder starts exactly after the last trade the old one
committed: what the old one had buffered but not committed is received again
(filled, or replayed by the venue) and nothing it committed is taken twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ticker.events import Event, Tick
from ticker.sources.base import Source
from ticker.sources.marks import Mark, mark_after, seen, trade_order
from ticker.sources.upstream import Trade, Upstream

logger = logging.getLogger("ticker.sources.feed")

CAPACITY = 100_000  # trades buffered between two intervals, at most
MAX_FILL = 5_000  # trades one gap may fill over REST; a longer gap is counted as lost
STOP_WAIT = 5.0  # seconds ``pause`` waits for the thread to close its connection
RATE_WINDOW = 10.0  # seconds over which ``trades_per_s`` is measured


def backoff_delay(attempt: int, ceiling: float, base: float = 0.5) -> float:
    """Return the wait before reconnect ``attempt`` (0, 1, ...): jittered, at most ``ceiling``."""
    return random.uniform(base / 2, min(ceiling, base * 2 ** min(attempt, 30)))


def start_native_thread(target: Callable[[], None], name: str) -> None:
    """Run ``target`` in an OS thread, even in a process gevent has monkey-patched."""
    from ticker.lifecycle import gevent_patched

    if gevent_patched():
        from gevent import monkey

        start = monkey.get_original("_thread", "start_new_thread")
        start(target, ())
    else:
        threading.Thread(target=target, name=name, daemon=True).start()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # a greenlet's sleep under gevent: the hub keeps running


class FeedSource(Source):
    """A source of trades streamed by an :class:`Upstream` in a native thread."""

    def __init__(
        self,
        name: str,
        *,
        silence: float = 30.0,
        backoff: float = 30.0,
        capacity: int = CAPACITY,
    ) -> None:
        self.name = name
        self.silence = silence
        self.backoff = backoff
        self.capacity = capacity
        self.buffer: deque[Trade] = deque()
        self.marks: dict[str, Mark] = {}  # the feed thread's: what it has taken
        self._handed: dict[str, Mark] = {}  # the producer's: what next_ticks has returned
        self._restored: dict[str, Mark] = {}
        self._checkpoint: dict[str, str] = {}
        self._counts: deque[tuple[float, int]] = deque()  # (monotonic time, trades) per drain
        self._run: _Run | None = None

    @abstractmethod
    def upstream(self) -> Upstream:
        """Build a fresh upstream for one connection."""

    # -- the producer's side -------------------------------------------------

    def restore(self, cursors: Mapping[str, str]) -> None:
        """Take the marks the log's cursor rows hold; the next ``resume`` starts after them."""
        restored = {}
        for symbol, text in cursors.items():
            try:
                restored[symbol] = Mark.load(text)
            except (ValueError, KeyError, TypeError):
                logger.warning("%s: unreadable cursor for %s ignored: %r", self.name, symbol, text)
        self._restored = restored

    def resume(self, latest: Sequence[Event]) -> None:
        """Open the upstream in a fresh thread, starting after the restored marks."""
        self._stop()
        self.buffer.clear()
        self._checkpoint = {}
        self.marks = dict(self._restored)
        self._handed = dict(self._restored)
        run = self._run = _Run()
        start_native_thread(lambda: self._thread(run), f"feed {self.name}")

    def pause(self) -> None:
        """Close the upstream and forget what was buffered: another process produces now."""
        self._stop()
        self.buffer.clear()
        self._checkpoint = {}

    def close(self) -> None:
        """Close the upstream for good."""
        self.pause()

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Return the trades received since the last call, oldest first, as ticks."""
        handed = self._handed
        moved = set()
        ticks = []
        for _ in range(len(self.buffer)):
            trade = self.buffer.popleft()
            ticks.append(trade.tick())
            handed[trade.symbol] = mark_after(handed.get(trade.symbol), trade)
            moved.add(trade.symbol)
        self._checkpoint = {symbol: handed[symbol].dump() for symbol in moved}
        self._count_rate(len(ticks))
        return ticks

    def checkpoint(self) -> dict[str, str]:
        """Return the cursor of each symbol after the ticks the last ``next_ticks`` returned."""
        return dict(self._checkpoint)

    # -- the feed thread -----------------------------------------------------

    def _stop(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        run.stop()
        end = time.monotonic() + STOP_WAIT
        while not run.done and time.monotonic() < end:
            _sleep(0.01)
        if not run.done:
            logger.warning("%s: the feed thread did not stop within %.0fs", self.name, STOP_WAIT)
        self.health.connected = False

    def _thread(self, run: _Run) -> None:
        try:
            asyncio.run(self._session(run))
        except asyncio.CancelledError:
            pass  # stopped: pause or close
        except Exception:
            logger.exception("%s: the feed thread failed", self.name)
        finally:
            run.done = True

    async def _session(self, run: _Run) -> None:
        """Connect, take trades, reconnect with back-off; until ``run`` is stopped."""
        run.bind(asyncio.get_running_loop(), asyncio.current_task())
        attempt = 0
        while not run.stopping:
            upstream = self.upstream()
            try:
                await upstream.connect()
                self.health.connected = True
                logger.info("%s: connected", self.name)
                while not run.stopping:
                    try:
                        batch = await asyncio.wait_for(upstream.receive(), self.silence)
                    except TimeoutError:
                        logger.warning(
                            "%s: silent for %.0fs, reconnecting", self.name, self.silence
                        )
                        break
                    attempt = 0
                    self.health.last_message_at = time.monotonic()
                    await self._take_batch(upstream, batch, run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("%s: stream failed: %s: %s", self.name, type(exc).__name__, exc)
            finally:
                if not run.stopping:  # a stopped run's successor may be connected already
                    self.health.connected = False
                await upstream.close()
            if run.stopping:
                break
            delay = max(backoff_delay(attempt, self.backoff), upstream.retry_after() or 0.0)
            attempt += 1
            self.health.reconnects += 1
            logger.info("%s: reconnecting in %.2fs", self.name, delay)
            await asyncio.sleep(delay)

    async def _take_batch(self, upstream: Upstream, batch: Sequence[Any], run: _Run) -> None:
        """Take a batch in time order, filling gaps first; nothing once ``run`` is stopped.

        A stopped run's thread may still be finishing while its successor runs
        (``pause`` waits only so long): it must not touch the new marks or buffer.
        """
        trades = sorted(self._parsed(upstream, batch), key=trade_order)
        for trade in trades:
            if upstream.sequential and not run.stopping:
                await self._fill_gap(upstream, trade, run)
            if run.stopping:
                return
            self._take(trade, upstream.ordered or upstream.sequential)

    def _parsed(self, upstream: Upstream, batch: Sequence[Any]) -> list[Trade]:
        trades = []
        for raw in batch:
            try:
                trades.append(upstream.parse(raw))
            except (ValueError, KeyError, TypeError) as exc:
                self.skip_malformed(raw, exc)
        return trades

    def skip_malformed(self, raw: Any, exc: Exception) -> None:
        """Log and count a message the upstream could not read (it is skipped)."""
        self.health.malformed += 1
        logger.warning(
            "%s: malformed message skipped (%s: %s): %.200r",
            self.name,
            type(exc).__name__,
            exc,
            raw,
        )

    async def _fill_gap(self, upstream: Upstream, trade: Trade, run: _Run) -> None:
        """Notice a jump in a sequential venue's ids and fill it over REST where it can."""
        mark = self.marks.get(trade.symbol)
        if mark is None or not (mark.trade_id.isdigit() and trade.trade_id.isdigit()):
            return
        last, this = int(mark.trade_id), int(trade.trade_id)
        missing = this - last - 1
        if missing <= 0:
            return
        self.health.gaps += 1
        if missing > MAX_FILL:
            logger.warning(
                "%s: gap in %s trade ids %d..%d: %d trades, too many to fill; lost",
                self.name, trade.symbol, last + 1, this - 1, missing,
            )  # fmt: skip
            return
        filled = 0
        try:
            while last < this - 1:
                page = self._parsed(
                    upstream, await upstream.fill(trade.symbol, last, this - 1 - last)
                )
                page = [t for t in sorted(page, key=trade_order) if last < int(t.trade_id) < this]
                if not page:
                    break
                if run.stopping:
                    return
                for found in page:
                    self._take(found, ordered=True)
                    filled += 1
                last = int(page[-1].trade_id)
        except Exception as exc:
            logger.warning("%s: could not fill the gap in %s: %s", self.name, trade.symbol, exc)
        logger.warning(
            "%s: gap in %s trade ids %d..%d: %d of %d filled over REST",
            self.name, trade.symbol, int(mark.trade_id) + 1, this - 1, filled, missing,
        )  # fmt: skip

    def _take(self, trade: Trade, ordered: bool) -> None:
        """Buffer ``trade`` unless it is at or before its symbol's mark; move the mark."""
        self.health.trades += 1
        mark = self.marks.get(trade.symbol)
        if mark is not None and seen(mark, trade, ordered):
            self.health.duplicates += 1
            return
        self.marks[trade.symbol] = mark_after(mark, trade)
        if len(self.buffer) >= self.capacity:
            self.health.dropped += 1
            if self.health.dropped % 10_000 == 1:
                logger.warning("%s: buffer full, %d trades dropped", self.name, self.health.dropped)
            return
        self.buffer.append(trade)

    def _count_rate(self, count: int) -> None:
        """Keep the drains of the last RATE_WINDOW and set ``health.trades_per_s`` from them."""
        now = time.monotonic()
        self._counts.append((now, count))
        while self._counts[0][0] < now - RATE_WINDOW:
            self._counts.popleft()
        self.health.trades_per_s = round(sum(n for _, n in self._counts) / RATE_WINDOW, 3)


class _Run:
    """One life of the feed thread: its loop and task, so another thread can stop it."""

    def __init__(self) -> None:
        self.stopping = False
        self.done = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    # No lock (a gevent-patched one would not hold across OS threads): each side
    # writes its field before it reads the other's, so one of them sees both.
    def bind(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None) -> None:
        """Say which loop and task the thread runs (called in the thread)."""
        self._loop, self._task = loop, task
        if self.stopping and task is not None:
            task.cancel()

    def stop(self) -> None:
        """Ask the thread to close its connection and end (called from any thread)."""
        self.stopping = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
