"""The one reader of the log per process: it feeds new events to the hub.

Invariant: the follower publishes every committed event exactly once and in id
order, or, when retention deleted events it had not read yet, none of what
follows them until it has restarted the hub past them (so a stream never skips
an event silently: below the hub's floor it reads the log and gets a reset).
It reads ``id > position`` in pages and moves ``position`` to the last id it
published.  Because ids become visible in commit order (see ``log``), no
event can later appear below ``position``, unless the log itself moves back
(a restored backup, a failover to a standby that missed commits): after each
read the follower checks that the newest row it has seen in the log is still
there as it was (by its ``ts``), and if not, restarts the hub at the new head
in a new epoch, so that every stream beyond what the log still holds is reset
(``ahead``) instead of silently skipping the ids the log hands out again.
Streams never poll the database while they wait: they wait on the hub, which
this single reader fills.

An append through this process's API that directly follows ``position`` (no
other process committed in between: the newest id before it, read under the
writer's lock, is ``position``) is handed over without being read back
(``published``); ``position`` and the hub move together under one lock, so a
page the follower read meanwhile skips what was handed over.  Other appends
made in this process wake the follower at once.  Appends by other
processes are found on SQLite by polling every ``poll_interval`` seconds (one
cheap indexed query per process, however many clients are connected), and on
PostgreSQL by ``LISTEN ticker_log`` on one dedicated connection per process
(woken by notifications alone, of ids it has passed already, as this
process's own appends handed over are, it reads nothing; one that comes while
this process writes a group waits for the group's hand-over, looking again
every ``DEFER``).  Notifications only
wake the follower; what it publishes always comes from the
log.  A lost notification or listening connection therefore loses nothing:
the follower still polls once a second, and every time the listener
(re)connects it wakes the follower to catch up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine

from ticker import log, sse
from ticker.candles.recent import RecentEvents
from ticker.events import Event, now_us
from ticker.hub import Hub
from ticker.log.listen import listen

logger = logging.getLogger(__name__)

PAGE = 2000
LISTEN_POLL = 1.0  # PostgreSQL: the safety-net poll while LISTEN does the waking
DEFER = 0.005  # how soon to look again at a notification deferred to a hand-over


class Follower:
    """Tail the log into a :class:`Hub`."""

    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        poll_interval: float,
        symbols: Sequence[str] = (),
        pulse_interval: float = 1.0,
        on_pulse: Callable[[], object] = lambda: None,
        recent: RecentEvents | None = None,
        appending: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        # Whether this process is writing a group of appends, whose hand-over
        # (``published``) will publish it or, failing that, wake the follower.
        self.appending = appending
        self.hub = hub
        self.recent = recent  # also handed every page, for this process's rollup
        self.symbols = tuple(symbols)  # whose newest event the hub keeps for snapshots
        self.pulse_interval = pulse_interval
        self.on_pulse = on_pulse
        self.listens = engine.dialect.name == "postgresql"
        self.poll_interval = LISTEN_POLL if self.listens else poll_interval
        self.position = 0
        # The newest row seen in the log, (id, ts): still there as it was, or the log moved back.
        self.newest: tuple[int, int | None] = (0, None)
        self._wake = threading.Event()
        self._asked = False  # wake() was called, not only a notification came
        self._notified = 0  # the newest id a notification named
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._publishing = threading.Lock()  # position and the hub move together
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Tell whether the follower thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start following from the current head, once; later calls do nothing.

        The hub starts warm: it holds the log's newest events, as many as its
        capacity, so streams resuming after a restart replay from memory.
        """
        with self._lock:
            if self._thread is not None:
                return
            self._warm_up()
            self._thread = threading.Thread(target=self._run, name="ticker-follower", daemon=True)
            self._thread.start()
            if self.listens:
                args = (self.engine, self._stop, self.wake, self._notice)
                listener = threading.Thread(target=listen, args=args, name="ticker-listen")
                listener.daemon = True
                listener.start()

    def _warm_up(self) -> None:
        """Restart the hub at the log's head, holding the log's newest window.

        The window is the newest ``capacity`` events, or, when the last
        ``span`` seconds (by tick time) hold more, those, up to ``most``.  The
        hub claims every event after its floor, so the floor is just below the
        window when the log may hold older events, and never below
        ``pruned_through`` (read after the window: whatever the window lacks
        below it was pruned).
        """
        hub = self.hub
        with self.engine.connect() as conn:
            seen = log.mark(conn, 0)
            window = log.newest(conn, hub.capacity, upto=seen.head)
            partial = len(window) == hub.capacity  # the log may hold older events
            young = now_us() - int(hub.span * 1_000_000)
            if hub.span and partial and window[0].ts >= young:
                # The last span holds more than capacity: take it, up to ``most``.
                window = log.newest(conn, hub.most, upto=seen.head)
                partial = len(window) == hub.most
                older = len(window) - hub.capacity
                while older > 0 and window[older - 1].ts >= young:
                    older -= 1
                if older > 0:
                    window, partial = window[older:], True
            pruned = log.pruned_through(conn)
            latest = log.latest(conn, self.symbols, upto=seen.head)
        floor = pruned
        if partial:
            floor = max(floor, window[0].id - 1)
        floor = min(floor, seen.head)
        held = [(e.id, e.symbol, e.ts, sse.tick(e)) for e in window if e.id > floor]
        self.hub.pruned_through = pruned
        self.hub.restart(floor, latest, valid_upto=seen.head, window=held)
        self.position, self.newest = seen.head, (seen.head, seen.head_ts)

    def wake(self) -> None:
        """Look at the log now instead of at the next poll."""
        self._asked = True
        self._wake.set()

    def _notice(self, payload: str) -> None:
        """Wake for a notification of the newest id committed (``payload``)."""
        try:
            self._notified = max(self._notified, int(payload))
        except ValueError:
            self._asked = True
        self._wake.set()

    def stop(self) -> None:
        """Ask the follower to stop."""
        self._stop.set()
        self._wake.set()

    def poll(self) -> int:
        """Publish what the log holds after ``position``; return how many events."""
        after = self.position
        with self.engine.connect() as conn:
            events = log.read_after(conn, after, None, PAGE)
            # Checked after the read: retention that deleted events this follower
            # had not read yet (it stalled, or the count limit is tiny) shows here,
            # and so does a log that moved back below what was published.
            newest, newest_ts = self.newest
            seen = log.mark(conn, newest)
            self.hub.pruned_through = seen.pruned_through  # for the hub's snapshots
            if seen.pruned_through > after:
                self._restart(conn, "retention deleted events after %d that it had not read")
                return 0
            if newest > seen.pruned_through and (seen.head < newest or seen.ts_at != newest_ts):
                self._restart(
                    conn,
                    "the log moved back below %d (a restored backup, a failover)",
                    self._still_held(conn),
                )
                return 0
            if seen.head > self.newest[0]:  # (a hand-over may have moved it on meanwhile)
                self.newest = (seen.head, seen.head_ts)
        if events:
            with self._publishing:
                if self.position != after:  # handed over meanwhile (``published``)
                    events = [e for e in events if e.id > self.position]
                    after = self.position
                if events:
                    self._publish(after, events)
        return len(events)

    def published(self, after: int, events: Sequence[Event]) -> bool:
        """Publish events this process just committed, if they follow on from ``position``.

        ``after``: the newest id before them, read under the writer's lock, so
        they are every event with ``after < id`` up to their last.  Saves
        reading them back; when another process committed in between (the hub
        is not at ``after``), or the follower is not running, it says no and
        the caller wakes the follower instead.
        """
        with self._publishing:
            if not events or not self.running or self.position != after:
                return False
            self._publish(after, events)
            return True

    def _publish(self, after: int, events: Sequence[Event]) -> None:
        """Hand every event with ``after < id`` up to the last of ``events`` to the hub."""
        if self.recent is not None:
            self.recent.add(after, events)
        latest = {e.symbol: e for e in events}  # the last one of each symbol wins
        self.hub.publish([(e.id, e.symbol, e.ts, sse.tick(e)) for e in events], latest)
        last = events[-1]
        self.position = last.id
        if last.id > self.newest[0]:  # the newest row known: the rewind check looks for it
            self.newest = (last.id, last.ts)

    def _still_held(self, conn: Connection) -> int:
        """Return the last id up to which the log still holds what the hub published.

        Compares the hub's ``(id, ts)`` with the log's rows, in id order, and
        stops at the first that differs; below the hub's floor nothing is known,
        so the answer is at least the floor.
        """
        floor, held = self.hub.held()
        rows = log.driver_rows(
            conn,
            "SELECT id, ts FROM ticks WHERE id > ? AND id <= ? ORDER BY id",
            (floor, self.position),
        )
        valid = floor
        for (id, ts), row in zip(held, rows, strict=False):
            if (int(row[0]), int(row[1])) != (id, ts):
                break
            valid = id
        return valid

    def _restart(self, conn: Connection, why: str, valid_upto: int | None = None) -> None:
        """Restart the hub at the log's head, in a new epoch; ``why`` takes the old position.

        Publishing what follows would hide from the streams the hub serves either
        the events retention deleted (below the hub's new floor they read the
        log, which tells them what they missed with an ``expired`` reset) or the
        ids the log lost and will hand out again (a stream whose cursor is beyond
        ``valid_upto`` gets an ``ahead`` reset when it sees the new epoch).
        """
        head = log.position(conn).head
        logger.warning("follower: " + why + "; restarting the hub at %d", self.position, head)
        latest, head_ts = log.latest(conn, self.symbols, upto=head), log.mark(conn, head).ts_at
        with self._publishing:
            self.hub.restart(head, latest, valid_upto)
            if self.recent is not None:
                self.recent.forget()
            self.position = head
            self.newest = (head, head_ts)

    def _run(self) -> None:
        backoff = self.poll_interval
        next_pulse = time.monotonic() + self.pulse_interval
        idle = False  # woken only by notifications of what it has published already
        deferred = False  # ... or is about to: this process's own group, being handed over
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_pulse:  # idle streams wake up to send their keepalives
                next_pulse = now + self.pulse_interval
                self.hub.pulse()
                self.on_pulse()
            try:
                if not idle and self.poll() == PAGE:
                    continue
                backoff = self.poll_interval
            except Exception:
                logger.exception("follower could not read the log; retrying in %.1fs", backoff)
                backoff = min(backoff * 2 + 0.1, 5.0)
            timeout = min(backoff, max(0.0, next_pulse - time.monotonic()))
            woken = self._wake.wait(min(timeout, DEFER) if deferred else timeout)
            self._wake.clear()
            asked, self._asked = self._asked, False
            if woken or deferred:
                # This process's own group, notified at its commit: leave it to the
                # hand-over, which asks when it cannot publish (see ARCHITECTURE).
                behind = self._notified > self.position
                deferred = not asked and behind and self.appending()
                idle = not asked and (not behind or deferred)
            else:
                idle = False  # the poll every poll_interval
