"""One writer per process for every live stream that is caught up.

A caught-up stream has nothing to do until the next publish.  Instead of each
one sleeping in a greenlet of its own and waking to copy the same bytes, the
broadcaster *parks* it (``groups``): it keeps the stream's cursor and socket,
and on each publish reads the hub's stretch after its ``position`` once, routes
each event by symbol to the groups of streams that want it (same symbols,
same framing: each event is framed once per round, and a group's bytes are
joined once for all its streams), and makes one non-blocking ``send`` per
client of those groups.  A round costs what it
delivers; a parked stream that gets nothing is not touched, and costs a few
hundred bytes and no greenlet.

Invariant: a parked stream's cursor means what it means everywhere in
``cursor``: every event of its symbols with ``id <= cursor`` has been sent.
While grouped it is implicit, ``max(cursor, position)`` (``groups``): a
stream is grouped only when its cursor is ``position``; a round reads the
stretch ``position < id <= end`` whole, sets the cursor of each stream it sends
to ``end`` before the send, and only then moves ``position`` to ``end``; the
true cursor is written back whenever a stream leaves.  A stream that parks
at a hub head the broadcaster has not reached yet waits in ``joining``, and no
stretch reads past it, so the round that starts at its cursor admits it.  A long
round pauses between two groups every ``ROUND_SLICE`` so that appends and the
follower never wait behind it; a stream that parks during the pause joins too
(the round's groups are chosen, and ``position`` is about to move).  A
stream the broadcaster cannot serve whole (its socket took part of the write,
its cursor is below ``position``, or the hub no longer holds ``position``) is
*handed back*: it leaves the group with the exact bytes the socket did not
take, and a greenlet of its own writes them first, then serves the stream
through ``cursor.live`` (the hub, or the log when it is below the hub's floor)
until it is caught up, and parks it again.  So no message is sent twice or
skipped.  On shutdown every parked stream is handed back too, and
``cursor.live`` ends it with the shutdown notice; and so when the hub restarts
(a new epoch: the log may have moved back below ``position``), with the
cursors written back from the old ``position`` before it moves, so that
``cursor.live`` resets each stream beyond the new head.  Only gunicorn's gevent
worker runs one (see ``takeover``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from itertools import chain

import gevent
from sqlalchemy import Engine

from ticker.hub import PULSES_PER_HEARTBEAT, Hub
from ticker.stream.cursor import PAGE, Cursor, Subscription, catch_up, keepalive_after, live
from ticker.stream.groups import Groups
from ticker.stream.slots import Slot, Streams, Writer, shutting
from ticker.stream.takeover import ClientSocket, chunk

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1.0  # seconds the streams being written get to take the shutdown notice
ROUND_SLICE = 0.005  # seconds a round writes before it lets the other greenlets run


class Listener(Cursor):
    """A live stream served from outside any request: its cursor, socket and slot.

    While it sits in a group, ``cursor`` may lag: the stream has been served
    up to ``max(cursor, position)`` (``groups``), written back when it leaves.
    """

    __slots__ = ("client", "slot", "writer")

    def __init__(self, symbols: tuple[str, ...], client: ClientSocket, slot: Slot) -> None:
        super().__init__(symbols)
        self.client = client
        self.slot = slot
        self.writer: Writer = slot.watch(shutting(client.sock))


class Broadcaster:
    """Serve the caught-up streams of one process from one greenlet."""

    def __init__(self, engine: Engine, hub: Hub, streams: Streams, heartbeat: float) -> None:
        self.engine = engine
        self.hub = hub
        self.streams = streams
        self.heartbeat = heartbeat
        self.groups: Groups[Listener] = Groups(hub.head)
        self.closed = False
        self._catching_up: set[gevent.Greenlet] = set()
        self._ended = threading.Event()  # set once close() has ended every stream
        self._greenlet: gevent.Greenlet | None = None

    @property
    def running(self) -> bool:
        """Tell whether the broadcaster serves streams (started and not closed)."""
        return self._greenlet is not None and not self.closed

    @property
    def parked(self) -> int:
        """Return how many streams are parked."""
        return len(self.groups)

    def start(self) -> None:
        """Start the broadcasting greenlet."""
        self._greenlet = gevent.spawn(self._run)

    def open(self, client: ClientSocket, preamble: bytes, asked: Subscription, slot: Slot) -> None:
        """Serve a new stream in this greenlet until it is caught up, then park it.

        ``preamble`` is the response's status line and headers, sent with the first message.
        """
        listener = Listener(asked.symbols, client, slot)
        messages = chain(
            catch_up(self.engine, self.hub, listener, asked, self.streams), self._live(listener)
        )
        first = client.frame(next(messages))  # the retry: no database read before it
        self.serve(listener, messages, preamble + first)

    def serve(self, listener: Listener, messages: Iterator[bytes], pending: bytes = b"") -> None:
        """Write ``pending``, then ``messages``, to the listener; park it once caught up."""
        client, writer = listener.client, listener.writer
        reason = "shutdown"
        try:
            if pending:
                client.send(pending, writer)
            while True:
                for data in messages:
                    client.send(client.frame(data), writer)
                if self.hub.closed:
                    break
                if self._park(listener):
                    return
                messages = self._live(listener)
        except OSError:
            reason = "client gone"  # the slot says "stalled" when the sweep cut it off
        except gevent.GreenletExit:
            reason = "shutdown: notice not taken"
        except Exception as exc:
            logger.exception("stream failed")
            reason = f"error: {type(exc).__name__}"
        self._end(listener, reason)

    def close(self) -> None:
        """End every stream it serves outside a request: parked or handed back, with the notice.

        Call it once the hub has closed.  Streams whose client does not take the
        notice within ``SHUTDOWN_GRACE`` are cut off.  (A stream still catching
        up in its request ends by itself: the replay stops when the hub closes.)
        """
        if self.closed:  # a second caller (the shutdown watch, worker_exit) waits for the first
            self._ended.wait(2 * SHUTDOWN_GRACE)
            return
        self.closed = True
        self._hand_back_all()
        writing = list(self._catching_up)
        gevent.joinall(writing, timeout=SHUTDOWN_GRACE)
        gevent.killall([g for g in writing if not g.dead], block=True, timeout=SHUTDOWN_GRACE)
        self._ended.set()

    def _live(self, listener: Listener) -> Iterator[bytes]:
        return live(self.engine, self.hub, listener, self.heartbeat, self.streams, until_idle=True)

    def _park(self, listener: Listener) -> bool:
        if self.closed or listener.cursor < self.hub.head or listener.epoch != self.hub.epoch:
            return False
        self.groups.park(listener, listener.client.chunked)
        return True

    def _end(self, listener: Listener, reason: str) -> None:
        """End a stream: properly after a shutdown notice, else by closing the socket."""
        self.groups.remove(listener)
        listener.client.close(finish=reason == "shutdown")
        listener.slot.close(reason)

    def _hand_back(self, listener: Listener, rest: bytes) -> None:
        """Serve a stream from a greenlet of its own, starting with the unsent ``rest``."""
        self.groups.remove(listener)  # its cursor written back first
        runner = gevent.spawn(self.serve, listener, self._live(listener), rest)
        self._catching_up.add(runner)
        runner.link(self._catching_up.discard)

    def _run(self) -> None:
        hub, groups = self.hub, self.groups
        groups.position, epoch = hub.head, hub.epoch  # before any stream can park
        pulse = self.heartbeat / PULSES_PER_HEARTBEAT
        scanned = time.monotonic()
        while not hub.closed:
            try:
                if epoch != hub.epoch:  # the hub restarted, perhaps below position: each
                    epoch = hub.epoch  # stream checks its own cursor, written back first
                    self._hand_back_all()
                    groups.position = hub.head
                while groups.position < hub.head and not hub.closed:
                    self._deliver()
                now = time.monotonic()
                if now - scanned >= pulse:
                    scanned = now
                    self._keep_alive(now)
            except Exception:  # one stream's trouble must not stop every stream's ticks
                logger.exception("broadcast round failed; carrying on")
                self._hand_back_all()  # from the cursors as the failed round left them
                groups.position = hub.head
            hub.wait(groups.position, epoch=epoch)
        self.close()

    def _hand_back_all(self) -> None:
        """Hand back every parked stream: each catches up on its own, from its cursor."""
        for listener in self.groups.members():
            self._hand_back(listener, b"")

    def _deliver(self) -> None:
        """Send each group what the hub holds for it after ``position``; move ``position`` on.

        One stretch of the hub, routed by symbol: only the streams of groups that
        get something are touched.  Every ``ROUND_SLICE`` of writing, between
        two groups, the round lets the other greenlets run (appends, the
        follower, streams opening), so none waits behind a long round; a stream
        that parks meanwhile joins, and a close meanwhile ends the round.
        """
        groups = self.groups
        for listener in groups.admit():  # parked at a position already passed: alone
            self._hand_back(listener, b"")
        stretch = self.hub.stretch(groups.position, PAGE, groups.next_stop())
        if stretch is None:  # the hub no longer holds position: every stream reads the log
            self._hand_back_all()
            groups.position = self.hub.head
            return
        now = sliced = time.monotonic()
        cursor, ids, ts, messages = stretch.cursor, stretch.ids, stretch.ts, stretch.messages
        # Each event framed once per round; a group's payload is its events' frames,
        # one chunk each, so a group with one event sends bytes already built.
        framed = [chunk(m) for m in messages]
        ticks_by_last: dict[int, int] = {}  # newest event of a write → ticks in such writes
        writes_by_last: dict[int, int] = {}  # … and how many such writes
        groups.routing = True
        try:
            for group, hits in groups.route(stretch).items():
                frames = framed if group.chunked else messages
                if isinstance(hits, int):
                    payload, last, count = frames[hits], hits, 1
                else:
                    payload, last, count = b"".join([frames[i] for i in hits]), hits[-1], len(hits)
                last_id = ids[last]
                sent = 0
                for listener in list(group.members):  # as it is now, after any pause
                    listener.cursor = cursor  # before the send: a failed round hands it back here
                    try:
                        took = listener.client.send_now(payload)
                    except OSError:
                        self._end(listener, "client gone")
                        continue
                    listener.sent_id = last_id
                    listener.quiet_since = now
                    if took < len(payload):  # a slow reader: the rest, then the hub or log, alone
                        self._hand_back(listener, payload[took:])
                    else:
                        sent += 1
                if sent:
                    ticks_by_last[last] = ticks_by_last.get(last, 0) + count * sent
                    writes_by_last[last] = writes_by_last.get(last, 0) + sent
                if time.monotonic() - sliced >= ROUND_SLICE:
                    gevent.sleep(0)
                    sliced = time.monotonic()
                    if self.closed:  # close() handed every stream back meanwhile
                        break
        finally:
            groups.routing = False
        for last, writes in writes_by_last.items():  # per event, not per stream
            self.streams.on_sent(ticks_by_last[last], ts[last], False, writes=writes)
        groups.position = cursor  # every stream still grouped is served up to here

    def _keep_alive(self, now: float) -> None:
        """Send a keepalive to every parked stream quiet for long enough."""
        quiet_for = keepalive_after(self.heartbeat)
        for listener in self.groups.members():
            if now - listener.quiet_since < quiet_for:
                continue
            self.groups.settle(listener)  # the keepalive names the stream's true cursor
            message = listener.keepalive(now, quiet_for)
            if message is None:
                continue
            data = listener.client.frame(message)
            try:
                took = listener.client.send_now(data)
            except OSError:
                self._end(listener, "client gone")
                continue
            if took < len(data):
                self._hand_back(listener, data[took:])
