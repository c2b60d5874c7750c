"""One SSE connection: open, replay from the log, hand over to live, keep alive.

Invariant: a stream's ``cursor`` is the id up to which it has served the log
(sent every event of its symbols with ``id <= cursor``).  Each step reads
strictly after the cursor and moves it to the end of what it read, so nothing
is sent twice or skipped:

- opening: with no last id, or one the log cannot resume (reset), the stream
  sends the latest tick of each symbol and sets the cursor to the head read in
  the same snapshot (the hub's, when the hub stands at the log's head);
  otherwise the cursor is the client's last id;
- replay: pages of the log up to the head of each page's snapshot, or of the
  hub once the cursor is within it (up to the hub's head), then the ``live``
  marker;
- live: the hub serves everything after the cursor; when the cursor is below
  the hub's floor (the client read slower than ticks arrived) the log does,
  page by page, until the stream is back within the hub.

No database connection is held between these reads, so idle streams cost no
connection from the pool.  Under gunicorn's gevent worker, a caught-up stream
leaves this loop (``following(until_idle=True)``) and ``broadcast`` serves it
with the same cursor.  Flask-free: the view in ``views`` wraps it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Engine

from ticker import log, sse
from ticker.events import Event
from ticker.hub import PULSES_PER_HEARTBEAT, Batch, Hub

PAGE = 1000
WINDOW = 20 * PAGE  # the most ids one page of the log scans


class Writer:
    """A stream's write in progress: when it started, and how to cut the client off."""

    __slots__ = ("abort", "since")

    def __init__(self, abort: Callable[[], None]) -> None:
        self.abort = abort
        self.since: float | None = None


class Streams:
    """The streams of one process: the ``TICKER_MAX_STREAMS`` slots and what they sent.

    The counters serve ``/healthz``; ``/metrics`` subclasses the hooks.  ``sweep``
    cuts off clients whose write has been blocked too long: a client that stops
    reading must not hold its slot forever.  (A socket timeout would do the same
    at the price of a timer on every write.)
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

    def acquire(self) -> bool:
        """Take a slot if one is free."""
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            self.on_open()
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self.open -= 1
            self.on_close()

    def sweep(self, max_block: float) -> int:
        """Abort the writes blocked for more than ``max_block`` seconds; return how many."""
        now = time.monotonic()
        stuck = [w for w in list(self.writers) if w.since is not None and now - w.since > max_block]
        for writer in stuck:
            writer.since = None
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


def write_timeout(heartbeat: float) -> float:
    """Return how long a write may block before the client counts as gone."""
    return max(2.0, 4 * heartbeat)


def opening(
    conn: Connection, symbols: Sequence[str], kind: str, head: int | None = None, **extra: Any
) -> tuple[bytes, int]:
    """Encode a ``snapshot`` or ``reset`` message and return it with the head it names."""
    if head is None:
        head = log.position(conn).head
    return opening_message(kind, head, log.latest(conn, symbols, upto=head), **extra), head


def opening_message(kind: str, head: int, latest: Sequence[Event], **extra: Any) -> bytes:
    """Encode a ``snapshot`` or ``reset`` message: ``head`` and the newest tick per symbol."""
    body = {**extra, "head": head, "ticks": [e.to_dict() for e in latest]}
    return sse.message(kind, body, id=head)


def _page(engine: Engine, live: Live) -> tuple[Batch, bool, bool]:
    """Read the log's next page after ``live.cursor``, and size the next page's id window.

    Returns the page, whether it is a reset instead, and whether it reached the head.
    """
    cursor, symbols = live.cursor, live.symbols
    with engine.connect() as conn:
        if cursor + live.window > live.head:  # the page may reach the head last seen
            live.head = log.position(conn).head
        head = live.head
        # A bounded id range keeps each page's scan short whatever plan the
        # database picks (PostgreSQL may read every id of the range, then sort).
        # The range follows how dense the stream's symbols are in the log: a
        # full page shrinks it to about what that page spanned, a short one
        # widens it, up to WINDOW.
        upto = min(head, cursor + live.window)
        found = log.read_after(conn, cursor, symbols, PAGE, upto=upto)
        # Checked after the read: a prune racing it shows up here, never as a gap.
        if cursor < log.pruned_through(conn):
            message, head = opening(conn, symbols, "reset", reason="expired")
            return Batch([message], head, head), True, True
    full = len(found) == PAGE
    moved_to = found[-1].id if full else upto
    if full:
        live.window = min(max(PAGE, (moved_to - cursor) * 5 // 4), WINDOW)
    elif moved_to < head:
        live.window = min(live.window * 4, WINDOW)
    if not found:
        return Batch([], moved_to, None), False, moved_to >= head
    page = Batch([sse.tick(e) for e in found], moved_to, found[-1].id, found[-1].ts)
    return page, False, moved_to >= head


class Live:
    """Where a live stream stands in the log: what it has served and what it last sent.

    ``cursor``: every event of ``symbols`` with ``id <= cursor`` has been sent.
    ``sent_id``: the last id the client holds (from a message or a keepalive).
    """

    __slots__ = (
        "behind",
        "cursor",
        "head",
        "quiet_since",
        "sent_id",
        "symbols",
        "wanted",
        "window",
    )

    def __init__(self, symbols: Sequence[str], cursor: int = 0) -> None:
        self.symbols = tuple(symbols)
        self.wanted = frozenset(symbols)
        self.cursor = self.sent_id = cursor
        self.quiet_since = time.monotonic()
        self.behind = False  # served from the log after falling below the hub
        self.window = 2 * PAGE  # how many ids the next page of the log may scan
        self.head = 0  # the log's head when last read (it never moves back)

    def keepalive(self, now: float, quiet_for: float) -> bytes | None:
        """Return the keepalive due after ``quiet_for`` seconds of silence, else None.

        It carries the cursor as the client's new resume point when ticks of
        other symbols have passed since the last id the client holds.
        """
        if now - self.quiet_since < quiet_for:
            return None
        self.quiet_since = now
        moved = self.cursor > self.sent_id
        self.sent_id = self.cursor
        return sse.keepalive(self.cursor if moved else None)


def events(
    engine: Engine,
    hub: Hub,
    symbols: Sequence[str],
    last_id: int | None,
    heartbeat: float,
    retry_ms: int,
    streams: Streams,
    abort: Callable[[], None] = lambda: None,
    send: Callable[[bytes], None] | None = None,
) -> Iterator[bytes]:
    """Yield the messages of one stream until the client goes or the hub closes.

    With ``send`` (see ``wire``), everything after the first message is written
    through it instead of yielded.  ``abort`` cuts the client off:
    ``Streams.sweep`` calls it when a write has blocked too long.
    """
    writer = Writer(abort)
    streams.writers.add(writer)
    live = Live(symbols)
    messages = opened(engine, hub, live, last_id, retry_ms, streams)
    messages = chain(messages, following(engine, hub, live, heartbeat, streams))
    try:
        yield next(messages)  # the server sends the headers with this first one
        for data in messages:
            writer.since = time.monotonic()
            if send is None:
                yield data
            else:
                send(data)
            writer.since = None
    finally:
        streams.writers.discard(writer)


def opened(
    engine: Engine,
    hub: Hub,
    live: Live,
    last_id: int | None,
    retry_ms: int,
    streams: Streams,
) -> Iterator[bytes]:
    """Yield a new stream's first messages: the retry, then a snapshot, a reset or the replay.

    Leaves ``live`` at the point from which the hub takes over.
    """
    symbols = live.symbols
    yield sse.retry(retry_ms)

    with engine.connect() as conn:
        position = log.position(conn)
        head = position.head
        first: bytes | None = None
        if last_id is None:
            # When this process's hub has caught up with the log, it holds the newest
            # tick of each symbol: the snapshot needs no further query.
            latest = hub.snapshot(symbols, head, position.pruned_through)
            if latest is None:
                latest = log.latest(conn, symbols, upto=head)
            first, cursor = opening_message("snapshot", head, latest), head
        elif last_id > head or last_id < position.pruned_through:
            reason = "ahead" if last_id > head else "expired"
            first, cursor = opening(conn, symbols, "reset", head, reason=reason)
            streams.on_reset(reason)
        else:
            cursor = last_id
    live.cursor = live.sent_id = cursor  # the resume point the client holds
    live.head = head

    if first is not None:
        yield first
    else:
        replayed = 0
        while True:
            # What the hub still holds needs no query: after a deploy or a blip,
            # reconnecting clients are mostly a few seconds behind.  Only once the
            # hub has reached the log's head as read at the opening, though: the
            # replay covers at least up to it, as the ``live`` marker promises.
            in_hub = hub.started and hub.head >= live.head
            held = hub.read(live.cursor, live.wanted, PAGE) if in_hub else None
            if held is not None:
                page, reset, caught_up = held, False, held.cursor >= hub.head
            else:
                page, reset, caught_up = _page(engine, live)
            if page.messages:
                yield b"".join(page.messages)
            live.cursor, live.sent_id = page.cursor, page.last_id or live.sent_id
            if reset:  # retention overtook the replay: the reset says so, then live
                streams.on_reset("expired")
                break
            streams.on_sent(len(page.messages), page.last_ts, replay=True)
            replayed += len(page.messages)
            if caught_up:
                yield sse.message("live", {"replayed": replayed, "head": live.cursor})
                break
    live.quiet_since = time.monotonic()


def keepalive_after(heartbeat: float) -> float:
    """Return how long a stream may stay quiet before it sends a keepalive.

    Pulses come ``PULSES_PER_HEARTBEAT`` times a heartbeat; sending the keepalive
    one pulse early keeps every silence under the heartbeat.
    """
    return heartbeat * (1 - 1 / PULSES_PER_HEARTBEAT)


def following(
    engine: Engine,
    hub: Hub,
    live: Live,
    heartbeat: float,
    streams: Streams,
    until_idle: bool = False,
) -> Iterator[bytes]:
    """Yield a stream's live messages and keepalives, from the hub or, when behind, the log.

    Ends when the hub closes (on shutdown, between messages: the client
    reconnects), or with ``until_idle`` as soon as the stream is caught up with
    nothing to send: a ``broadcast.Broadcaster`` serves it from there.
    """
    quiet_for = keepalive_after(heartbeat)
    reset = False
    while not hub.closed:
        batch = hub.read(live.cursor, live.wanted, PAGE)
        if batch is None:  # below the hub's floor: this client is slow, serve it from the log
            if not live.behind:
                streams.on_fallback()
            live.behind = True
            batch, reset, _ = _page(engine, live)
            if reset:
                streams.on_reset("expired")
        else:
            live.behind = False
        messages, live.cursor = batch.messages, batch.cursor
        now = time.monotonic()
        if messages:
            live.quiet_since = now
            yield messages[0] if len(messages) == 1 else b"".join(messages)
            if not (live.behind and reset):
                streams.on_sent(len(messages), batch.last_ts, replay=False)
            live.sent_id = batch.last_id or live.sent_id
            continue
        keepalive = live.keepalive(now, quiet_for)
        if keepalive is not None:
            yield keepalive
            continue
        if until_idle and live.cursor >= hub.head:
            return
        hub.wait(live.cursor)
