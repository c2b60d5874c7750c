"""One writer per process for every live stream that is caught up.

A caught-up stream has nothing to do until the next publish.  Instead of each
one sleeping in a greenlet of its own and waking to copy the same bytes, the
broadcaster *parks* it: it keeps the stream's cursor and socket, and on each
publish sends every group of streams with the same symbols and framing the
bytes encoded once for the group, with one non-blocking ``send`` per client.
A parked stream costs a few hundred bytes and no greenlet.

Invariant: a parked stream's ``cursor`` means what it means everywhere in
``cursor``: every event of its symbols with ``id <= cursor`` has been sent.
A stream is parked only when its cursor is the hub's head, and the
broadcaster moves the cursors of a group from its own ``position`` to the end
of what it read from the hub, only for streams whose cursor was ``position``.
A stream the broadcaster cannot serve whole (its socket took part of the
write, its cursor is elsewhere, or the hub no longer holds ``position``) is
*handed back*: it leaves the group with the exact bytes the socket did not
take, and a greenlet of its own writes them first, then serves the stream
through ``cursor.live`` (the hub, or the log when it is below the hub's floor)
until it is caught up, and parks it again.  So no message is sent twice or
skipped.  On shutdown every parked stream is handed back too, and
``cursor.live`` ends it with the shutdown notice; and so when the hub restarts
(a new epoch: the log may have moved back below ``position``), so that
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
from ticker.stream.slots import Slot, Streams, Writer, shutting
from ticker.stream.takeover import ClientSocket, chunk

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1.0  # seconds the streams being written get to take the shutdown notice


class Listener(Cursor):
    """A live stream served from outside any request: its cursor, socket and slot."""

    __slots__ = ("client", "group", "slot", "writer")

    def __init__(self, symbols: tuple[str, ...], client: ClientSocket, slot: Slot) -> None:
        super().__init__(symbols)
        self.client = client
        self.slot = slot
        self.writer: Writer = slot.watch(shutting(client.sock))
        self.group: set[Listener] | None = None


class Broadcaster:
    """Serve the caught-up streams of one process from one greenlet."""

    def __init__(self, engine: Engine, hub: Hub, streams: Streams, heartbeat: float) -> None:
        self.engine = engine
        self.hub = hub
        self.streams = streams
        self.heartbeat = heartbeat
        self.groups: dict[tuple[frozenset[str], bool], set[Listener]] = {}
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
        return sum(len(group) for group in self.groups.values())

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
        key = (listener.wanted, listener.client.chunked)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = set()
        group.add(listener)
        listener.group = group
        return True

    def _unpark(self, listener: Listener) -> None:
        if listener.group is not None:
            listener.group.discard(listener)
            listener.group = None

    def _end(self, listener: Listener, reason: str) -> None:
        """End a stream: properly after a shutdown notice, else by closing the socket."""
        self._unpark(listener)
        listener.client.close(finish=reason == "shutdown")
        listener.slot.close(reason)

    def _hand_back(self, listener: Listener, rest: bytes) -> None:
        """Serve a stream from a greenlet of its own, starting with the unsent ``rest``."""
        self._unpark(listener)
        runner = gevent.spawn(self.serve, listener, self._live(listener), rest)
        self._catching_up.add(runner)
        runner.link(self._catching_up.discard)

    def _run(self) -> None:
        hub = self.hub
        position, epoch = hub.head, hub.epoch
        pulse = self.heartbeat / PULSES_PER_HEARTBEAT
        scanned = time.monotonic()
        while not hub.closed:
            try:
                if epoch != hub.epoch:  # the hub restarted, perhaps below position: each
                    position, epoch = hub.head, hub.epoch  # stream checks its own cursor
                    self._hand_back_all()
                while position < hub.head and not hub.closed:
                    position = self._deliver(position)
                now = time.monotonic()
                if now - scanned >= pulse:
                    scanned = now
                    self._keep_alive(now)
            except Exception:  # one stream's trouble must not stop every stream's ticks
                logger.exception("broadcast round failed; carrying on")
                position = hub.head
                self._hand_back_all()
            hub.wait(position, epoch=epoch)
        self.close()

    def _hand_back_all(self) -> None:
        """Hand back every parked stream: each catches up on its own, from its cursor."""
        for group in list(self.groups.values()):
            for listener in list(group):
                self._hand_back(listener, b"")

    def _deliver(self, position: int) -> int:
        """Send each group what the hub holds after ``position``; return where that ends."""
        moved_to = self.hub.head
        now = time.monotonic()
        for key, group in list(self.groups.items()):
            if not group:
                del self.groups[key]
                continue
            batch = self.hub.read(position, key[0], PAGE)
            if batch is None:  # the hub no longer holds position: these streams read the log
                for listener in list(group):
                    self._hand_back(listener, b"")
                continue
            moved_to = batch.cursor  # the same for every group: reads differ only in symbols
            payload = b"".join(batch.messages)
            if payload:
                payload = chunk(payload) if key[1] else payload
            sent = 0
            for listener in list(group):
                if listener.cursor != position:  # parked after this publish: catch up alone
                    self._hand_back(listener, b"")
                    continue
                listener.cursor = batch.cursor
                if not payload:
                    continue
                try:
                    took = listener.client.send_now(payload)
                except OSError:
                    self._end(listener, "client gone")
                    continue
                listener.sent_id = batch.last_id or listener.sent_id
                listener.quiet_since = now
                if took < len(payload):  # a slow reader: the rest, then the hub or log, alone
                    self._hand_back(listener, payload[took:])
                else:
                    sent += 1
            if sent:
                self.streams.on_sent(len(batch.messages) * sent, batch.last_ts, False, writes=sent)
        return moved_to

    def _keep_alive(self, now: float) -> None:
        """Send a keepalive to every parked stream quiet for long enough."""
        quiet_for = keepalive_after(self.heartbeat)
        for group in list(self.groups.values()):
            for listener in list(group):
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
