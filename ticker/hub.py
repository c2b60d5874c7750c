"""Fan-out of the log's newest events to every stream of one process.

Invariant: the hub holds every event with ``floor < id <= head``, in id order,
each already encoded as an SSE message (once per process, not per client).
A stream keeps only a cursor, the id up to which it has been served.  With
``cursor >= floor`` everything it still needs is here or not yet published;
with ``cursor < floor`` the hub answers ``None`` and the stream reads the log
instead.  Nothing is queued per stream, so a slow reader costs no memory: it
just falls below ``floor`` and catches up from the log.

Once the follower has started it, the hub also knows the newest event of each
tracked symbol as of ``head``, and the log's prune horizon as the follower
last read it, so a new stream's snapshot needs no query; and it starts
*warm*, holding the log's newest window (``capacity`` events, or the last
``span`` seconds when those are more, up to ``most``), so that the streams
reconnecting after a restart or a deploy replay from memory with no query
either.

Pure: no Flask, no database.  ``threading`` primitives become greenlet-aware
when gevent has patched them, so the same code serves threads and greenlets.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ticker.events import Event

PULSES_PER_HEARTBEAT = 4  # how often the follower pulses the hub, per heartbeat


@dataclass(frozen=True, slots=True)
class Batch:
    """What one read from the hub gave a stream."""

    messages: list[bytes]
    cursor: int  # the stream is now served up to this id
    last_id: int | None  # id of the last message in ``messages``
    last_ts: int | None = field(default=None, compare=False)  # its tick time, for latency


@dataclass(frozen=True, slots=True)
class Stretch:
    """Every event the hub held after a position, of every symbol: for the broadcaster."""

    ids: list[int]
    symbols: list[str]
    ts: list[int]
    messages: list[bytes]
    cursor: int  # every event with ``id <= cursor`` after the position is in the lists


class Hub:
    """Hold the newest encoded events and wake the streams waiting for them."""

    def __init__(self, capacity: int = 20000, span: float = 0.0) -> None:
        self.capacity = capacity  # it holds at least the newest this many events
        self.span = span  # and every event that arrived in the last this many seconds
        self.most = 5 * capacity  # but never more than this many
        self.floor = 0
        self.head = 0
        self.epoch = 0  # counts restarts: a stream that saw another epoch checks its cursor
        self.valid_upto = 0  # a cursor beyond this id, from an earlier epoch, must be reset
        self.pruned_through = 0  # the log's, as the follower last read it
        self.closed = False
        self._ids: list[int] = []
        self._symbols: list[str] = []
        self._ts: list[int] = []
        self._messages: list[bytes] = []
        self._arrived: list[float] = []  # time.monotonic() when each was published
        self._latest: dict[str, Event] | None = None  # known once restarted
        self._lock = threading.Lock()
        self._changed = threading.Event()

    def restart(
        self,
        position: int,
        latest: Iterable[Event] = (),
        valid_upto: int | None = None,
        window: Sequence[tuple[int, str, int, bytes]] = (),
    ) -> None:
        """Forget everything and hold events from ``position`` on, in a new epoch.

        ``latest``: the newest event of each tracked symbol as of the last id of
        ``window``, or of ``position`` when there is none.  ``window``: the
        ``(id, symbol, ts, message)`` of every event of the log after
        ``position``, in id order, held at once (a warm start: streams that
        reconnect after a restart replay from memory).  ``valid_upto``
        (default: the new head): when the log moved back, the last id the log
        still holds as it was; a stream whose cursor is beyond it must be reset
        (``ahead``), and the waiters are woken to see that.
        """
        arrived = _arrival_times([item[2] for item in window])
        with self._lock:
            self._ids = [item[0] for item in window]
            self._symbols = [item[1] for item in window]
            self._ts = [item[2] for item in window]
            self._messages = [item[3] for item in window]
            self._arrived = arrived
            self.floor = position
            self.head = self._ids[-1] if window else position
            self.valid_upto = self.head if valid_upto is None else valid_upto
            self.epoch += 1
            self._latest = {e.symbol: e for e in latest}
            changed, self._changed = self._changed, threading.Event()
        changed.set()

    @property
    def started(self) -> bool:
        """Tell whether the follower has started the hub (until then it holds nothing)."""
        return self._latest is not None

    def window(self) -> tuple[int, int] | None:
        """Return the resume points the hub can serve alone, ``(low, head)``, once started.

        ``low`` is the floor, or the prune horizon as the follower last saw it
        when that is higher: the log would tell a stream resuming below it
        that it missed deleted events (``expired``).
        """
        with self._lock:
            if self._latest is None:
                return None
            return max(self.floor, self.pruned_through), self.head

    def snapshot(self, symbols: Sequence[str]) -> tuple[int, list[Event]] | None:
        """Return the head and the newest event of each of ``symbols`` as of it, once started.

        A symbol whose newest event retention deleted (``id <= pruned_through``,
        as the follower last read it) has none, as in the log.
        """
        with self._lock:
            latest = self._latest
            if latest is None:
                return None
            pruned = self.pruned_through
            return self.head, [latest[s] for s in symbols if s in latest and latest[s].id > pruned]

    def publish(
        self,
        items: Sequence[tuple[int, str, int, bytes]],
        latest: Mapping[str, Event] | None = None,
    ) -> None:
        """Append ``(id, symbol, ts, message)`` items that follow ``head``; wake the waiters.

        ``latest`` holds the newest of those events per symbol, for snapshots.
        """
        if not items:
            return
        now = time.monotonic()
        with self._lock:
            if latest and self._latest is not None:
                self._latest.update((s, e) for s, e in latest.items() if e.id > self.head)
            for id, symbol, ts, message in items:
                if id <= self.head:
                    continue
                self._ids.append(id)
                self._symbols.append(symbol)
                self._ts.append(ts)
                self._messages.append(message)
                self._arrived.append(now)
                self.head = id
            self._trim(now)
            changed, self._changed = self._changed, threading.Event()
        changed.set()

    def _trim(self, now: float) -> None:
        """Forget the oldest events beyond ``capacity`` that are older than ``span``.

        In chunks of a quarter of ``capacity``, not on every publish; ``most``
        bounds the memory whatever the rate.  Called under the lock.
        """
        held = len(self._ids)
        cut = held - self.capacity
        if cut <= self.capacity // 4:
            return
        if self.span:
            cut = min(cut, bisect_left(self._arrived, now - self.span))
        cut = max(cut, held - self.most)
        if cut <= self.capacity // 4 and held <= self.most:
            return
        self.floor = self._ids[cut - 1]
        del self._ids[:cut], self._symbols[:cut], self._ts[:cut]
        del self._messages[:cut], self._arrived[:cut]

    def read(self, cursor: int, symbols: Collection[str] | None, limit: int = 1000) -> Batch | None:
        """Return up to ``limit`` events after ``cursor`` of ``symbols``; None if below floor."""
        with self._lock:
            if cursor < self.floor:
                return None
            start = bisect_right(self._ids, cursor)
            end = min(len(self._ids), start + limit)
            if start >= end:
                return Batch([], cursor, None)
            last = end - 1
            if symbols is None:
                return Batch(
                    self._messages[start:end], self._ids[last], self._ids[last], self._ts[last]
                )
            messages = []
            found = None
            for i in range(start, end):
                if self._symbols[i] in symbols:
                    messages.append(self._messages[i])
                    found = i
            if found is None:
                return Batch(messages, self._ids[last], None)
            return Batch(messages, self._ids[last], self._ids[found], self._ts[found])

    def stretch(self, position: int, limit: int = 1000, upto: int | None = None) -> Stretch | None:
        """Return up to ``limit`` events after ``position`` and up to ``upto``; None if below floor.

        The stretch's cursor is where it ends: the last id read when ``limit``
        cut it short, else ``upto`` or the head, whichever is lower (with
        ``upto`` above the head, the events after the head are not published yet).
        """
        with self._lock:
            if position < self.floor:
                return None
            ids = self._ids
            start = bisect_right(ids, position)
            stop = len(ids) if upto is None or upto >= self.head else bisect_right(ids, upto)
            end = min(stop, start + limit)
            if end < stop:  # more than ``limit``: the next stretch goes on from the last id read
                cursor = ids[end - 1]
            else:
                cursor = max(position, self.head if upto is None else min(upto, self.head))
            return Stretch(
                ids[start:end],
                self._symbols[start:end],
                self._ts[start:end],
                self._messages[start:end],
                cursor,
            )

    def held(self) -> tuple[int, list[tuple[int, int]]]:
        """Return the floor and the ``(id, ts)`` of every event held, in id order."""
        with self._lock:
            return self.floor, list(zip(self._ids, self._ts, strict=True))

    def pulse(self) -> None:
        """Wake every waiter without news, so idle streams can check their keepalive."""
        with self._lock:
            changed, self._changed = self._changed, threading.Event()
        changed.set()

    def close(self) -> None:
        """Wake every waiter for good: the process is shutting down and streams should end."""
        with self._lock:
            self.closed = True
            changed = self._changed
        changed.set()

    def wait(self, cursor: int, timeout: float | None = None, epoch: int | None = None) -> bool:
        """Block until an event after ``cursor`` is published, a pulse, or ``timeout``.

        ``epoch``: the hub's epoch the waiter last saw; once the hub has restarted
        since, it returns at once.

        Streams wait without a timeout (a timer per wait is costly with thousands of
        streams) and rely on the follower's pulses, ``PULSES_PER_HEARTBEAT`` per
        heartbeat, to wake them for keepalives.
        """
        with self._lock:
            if self.head > cursor or self.closed or (epoch is not None and epoch != self.epoch):
                return True
            changed = self._changed
        return changed.wait(timeout)


def _arrival_times(ts: Sequence[int]) -> list[float]:
    """Date the events of a warm start as if they arrived at their tick time, in order.

    ``time.monotonic()`` values, never decreasing (tick times may be out of id
    order) and never in the future.
    """
    now, wall = time.monotonic(), time.time()
    arrived, latest = [], float("-inf")
    for tick_us in ts:
        latest = max(latest, now - max(0.0, wall - tick_us / 1_000_000))
        arrived.append(latest)
    return arrived
