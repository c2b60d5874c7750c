"""The events this process's follower read lately, kept for the rollup.

The follower reads every new event of the log once per process, for the hub.
The rollup needs the same events a second later; in the producer's process it
takes them from here instead of reading them back from the database, which
cost more than folding them.

Invariant: when ``start`` is set, ``events`` holds every committed event with
``start < id <= end``, in id order: the follower hands over each page it read
together with the position it read after, and a page that does not follow on
from ``end`` (the follower restarted past pruned events, or the buffer was
just switched on) starts the buffer again.  Nothing here can be stale: ids
become visible in commit order and committed events never change, so an event
read once is the event the rollup would read.  ``between`` answers ``None``
whenever it cannot vouch for a whole range, and the rollup reads the log.

Only the lease holder rolls up: the buffer keeps nothing until it is switched
on (``keep``), and about ``limit`` events (the oldest go first, a quarter of
``limit`` at a time), so other processes pay nothing and a stalled rollup
costs bounded memory.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Sequence

from ticker.events import Event


class RecentEvents:
    """A contiguous run of the log's newest events, as the follower read them."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.start: int | None = None  # events hold (start, end]; None: nothing vouched for
        self.end = 0
        self._events: list[Event] = []
        self._ids: list[int] = []
        self._wanted = False
        self._lock = threading.Lock()

    def keep(self, wanted: bool) -> None:
        """Start or stop keeping events (the rollup runs in this process, or no longer)."""
        with self._lock:
            if wanted != self._wanted:
                self._wanted = wanted
                self._clear()

    def forget(self) -> None:
        """Drop everything: the log moved back, and the ids held may be handed out again."""
        with self._lock:
            self._clear()

    def add(self, after: int, events: Sequence[Event]) -> None:
        """Take a page the follower read: every event with ``id > after`` up to its last."""
        if not events:
            return
        with self._lock:
            if not self._wanted:
                return
            if self.start is None or after != self.end:
                self._clear()
                self.start = after
            self._events.extend(events)
            self._ids.extend(e.id for e in events)
            self.end = events[-1].id
            excess = len(self._events) - self.limit
            if excess > self.limit // 4:  # trim in chunks, not a long list's front every page
                self._drop(excess)

    def between(self, after: int, upto: int, limit: int) -> list[Event] | None:
        """Return the first ``limit`` events with ``after < id <= upto`` that are held.

        Every event of the range up to the last one returned (or up to ``end``)
        is in the answer.  ``None`` when the run held does not start at or
        before ``after``, or nothing past ``after`` is held yet: read the log.
        """
        with self._lock:
            if self.start is None or after < self.start or after >= self.end:
                return None
            first = bisect_right(self._ids, after)
            last = min(bisect_right(self._ids, upto), first + limit)
            return self._events[first:last]

    def forget_through(self, mark: int) -> None:
        """Drop the events with ``id <= mark``: the candles hold them now."""
        with self._lock:
            if self.start is None or mark <= self.start:
                return
            count = bisect_right(self._ids, mark)
            del self._events[:count], self._ids[:count]
            self.start = min(mark, self.end)  # all of (mark, end] is still here

    def _drop(self, count: int) -> None:
        if count:
            self.start = self._ids[count - 1]
            del self._events[:count], self._ids[:count]

    def _clear(self) -> None:
        self.start = None
        self.end = 0
        self._events, self._ids = [], []
