"""Fan-out of the log's newest events to every stream of one process.

Invariant: the hub holds every event with ``floor < id <= head``, in id order,
each already encoded as an SSE message (once per process, not per client).
A stream keeps only a cursor, the id up to which it has been served.  With
``cursor >= floor`` everything it still needs is here or not yet published;
with ``cursor < floor`` the hub answers ``None`` and the stream reads the log
instead.  Nothing is queued per stream, so a slow reader costs no memory: it
just falls below ``floor`` and catches up from the log.

Once the follower has started it, the hub also knows the newest event of each
tracked symbol as of ``head``, so a new stream's snapshot needs no query; and
it starts *warm*, holding the log's newest ``capacity`` events, so that the
streams reconnecting after a restart or a deploy replay from memory too.

Pure: no Flask, no database.  ``threading`` primitives become greenlet-aware
when gevent has patched them, so the same code serves threads and greenlets.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
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
class Span:
    """Every event the hub held after a position, of every symbol: for the broadcaster."""

    ids: list[int]
    symbols: list[str]
    ts: list[int]
    messages: list[bytes]
    cursor: int  # every event with ``id <= cursor`` after the position is in the lists


class Hub:
    """Hold the newest encoded events and wake the streams waiting for them."""

    def __init__(self, capacity: int = 20000) -> None:
        self.capacity = capacity
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
        with self._lock:
            self._ids = [item[0] for item in window]
            self._symbols = [item[1] for item in window]
            self._ts = [item[2] for item in window]
            self._messages = [item[3] for item in window]
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
                self.head = id
            excess = len(self._ids) - self.capacity
            if excess > self.capacity // 4:  # trim in chunks, not on every publish
                self.floor = self._ids[excess - 1]
                del self._ids[:excess], self._symbols[:excess]
                del self._ts[:excess], self._messages[:excess]
            changed, self._changed = self._changed, threading.Event()
        changed.set()

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

    def span(self, position: int, limit: int = 1000, upto: int | None = None) -> Span | None:
        """Return up to ``limit`` events after ``position`` and up to ``upto``; None if below floor.

        The span's cursor is where it ends: the last id read when ``limit``
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
            if end < stop:  # more than ``limit``: the next span goes on from the last id read
                cursor = ids[end - 1]
            else:
                cursor = max(position, self.head if upto is None else min(upto, self.head))
            return Span(
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
