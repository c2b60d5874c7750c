"""Where a stream stands in the log, and the messages that move it: catch-up, then live.

Invariant: a stream's ``cursor`` is the id up to which it has served the log
(sent every event of its symbols with ``id <= cursor``).  Each step reads
strictly after the cursor and moves it to the end of what it read, so nothing
is sent twice or skipped:

- opening (:func:`catch_up`): with no last id, or one the log cannot resume
  (a reset), the stream sends the latest tick of each symbol and sets the
  cursor to the head read in the same snapshot (the hub's snapshot once the
  follower has started it: no query); otherwise the cursor is the client's
  last id (no query either when it is inside the hub's window);
- replay: pages of the log up to the head of each page's snapshot, or of the
  hub once the cursor is within it (up to the hub's head), then the ``live``
  marker;
- live (:func:`live`): the hub serves everything after the cursor; when the
  cursor is below the hub's floor (the client read slower than ticks arrived)
  the log does, page by page, until the stream is back within the hub.  After
  the hub restarted (a new ``epoch``: the follower found retention ahead of
  it, or the log moved back) the next page comes from the log with its head
  read again; a cursor beyond what the log still holds as it was
  (``Hub.valid_upto``) first gets an ``ahead`` reset to that id, and the
  stream carries on from there, so the ids the log hands out again reach it.  When
  the hub closes (shutdown) the stream ends between two messages, with the
  shutdown notice.

No database connection is held between these reads, so idle streams cost no
connection from the pool.  Flask-free: both write paths (``wsgi`` and
``broadcast``) drive these generators.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from ticker import log, sse
from ticker.hub import PULSES_PER_HEARTBEAT, Batch, Hub
from ticker.stream.slots import Streams

PAGE = 1000
WINDOW = 20 * PAGE  # the most ids one page of the log scans


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a new stream asked for, and when it should come back if cut off."""

    symbols: tuple[str, ...]
    last_id: int | None  # the client's resume point; None: start from a snapshot
    retry_ms: int  # the reconnect delay the stream tells the client


class Cursor:
    """Where a stream stands in the log: what it has served and what it last sent.

    ``cursor``: every event of ``symbols`` with ``id <= cursor`` has been sent.
    ``sent_id``: the last id the client holds (from a message or a keepalive).
    """

    __slots__ = (
        "behind",
        "cursor",
        "epoch",
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
        self.head = 0  # the log's head when last read (0: read it again)
        self.epoch = 0  # the hub's epoch this cursor was last checked against

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


def keepalive_after(heartbeat: float) -> float:
    """Return how long a stream may stay quiet before it sends a keepalive.

    Pulses come ``PULSES_PER_HEARTBEAT`` times a heartbeat; sending the keepalive
    one pulse early keeps every silence under the heartbeat.
    """
    return heartbeat * (1 - 1 / PULSES_PER_HEARTBEAT)


def read_page(engine: Engine, at: Cursor) -> tuple[Batch, str | None, bool]:
    """Read the log's next page after ``at.cursor``, and size the next page's id window.

    Returns the page, the reason when it is a ``reset`` instead (``expired``:
    retention deleted what the stream had not read; ``ahead``: the log moved
    back below the cursor), and whether it reached the head.
    """
    cursor, symbols = at.cursor, at.symbols
    with engine.connect() as conn:
        if cursor + at.window > at.head:  # the page may reach the head last seen
            at.head = log.position(conn).head
        head = at.head
        if head < cursor:  # read just now: the log lost the ids after head
            return Batch([_reset(conn, symbols, head, "ahead")], head, head), "ahead", True
        # A bounded id range keeps each page's scan short whatever plan the
        # database picks (PostgreSQL may read every id of the range, then sort).
        # The range follows how dense the stream's symbols are in the log: a
        # full page shrinks it to about what that page spanned, a short one
        # widens it, up to WINDOW.
        upto = min(head, cursor + at.window)
        found = log.read_after(conn, cursor, symbols, PAGE, upto=upto)
        # Checked after the read: a prune racing it shows up here, never as a gap.
        if cursor < log.pruned_through(conn):
            head = log.position(conn).head
            return Batch([_reset(conn, symbols, head, "expired")], head, head), "expired", True
    full = len(found) == PAGE
    moved_to = found[-1].id if full else upto
    if full:
        at.window = min(max(PAGE, (moved_to - cursor) * 5 // 4), WINDOW)
    elif moved_to < head:
        at.window = min(at.window * 4, WINDOW)
    if not found:
        return Batch([], moved_to, None), None, moved_to >= head
    page = Batch([sse.tick(e) for e in found], moved_to, found[-1].id, found[-1].ts)
    return page, None, moved_to >= head


def _restarted(engine: Engine, hub: Hub, at: Cursor) -> tuple[bool, bytes | None]:
    """Tell whether the hub restarted since ``at`` last looked, with the reset that may need.

    After a restart the next page comes from the log, with its head read
    again.  When the log moved back below the cursor (beyond ``valid_upto``,
    the last id the log still holds as it was), the stream gets an ``ahead``
    reset to that id instead, and carries on from there.
    """
    if at.epoch == hub.epoch:
        return False, None
    at.epoch, at.head, valid_upto = hub.epoch, 0, hub.valid_upto
    if at.cursor <= valid_upto:
        return True, None
    with engine.connect() as conn:
        reset = _reset(conn, at.symbols, valid_upto, "ahead")
    at.cursor = at.sent_id = valid_upto
    return True, reset


def _reset(conn: Connection, symbols: Sequence[str], head: int, reason: str) -> bytes:
    """Encode a ``reset`` to ``head``: the newest tick of each symbol, and why."""
    return sse.opening("reset", head, log.latest(conn, symbols, upto=head), reason=reason)


def catch_up(
    engine: Engine, hub: Hub, at: Cursor, asked: Subscription, streams: Streams
) -> Iterator[bytes]:
    """Yield a new stream's first messages: the retry, then a snapshot, a reset or the replay.

    Leaves ``at`` at the point from which :func:`live` takes over.
    """
    symbols, last_id = at.symbols, asked.last_id
    at.epoch = hub.epoch  # before the head is read: a restart after it is noticed
    yield sse.retry(asked.retry_ms)

    first: bytes | None = None
    opened = _open_from_hub(hub, symbols, last_id)
    if opened is not None:
        first, cursor, head = opened
    else:
        with engine.connect() as conn:
            position = log.position(conn)
            head = position.head
            if last_id is None:
                latest = log.latest(conn, symbols, upto=head)
                first, cursor = sse.opening("snapshot", head, latest), head
            elif last_id > head or last_id < position.pruned_through:
                reason = "ahead" if last_id > head else "expired"
                first, cursor = _reset(conn, symbols, head, reason), head
                streams.on_reset(reason)
            else:
                cursor = last_id
    at.cursor = at.sent_id = cursor  # the resume point the client holds
    at.head = head

    if first is not None:
        yield first
    else:
        yield from _replay(engine, hub, at, streams)
    at.quiet_since = time.monotonic()


def _open_from_hub(
    hub: Hub, symbols: Sequence[str], last_id: int | None
) -> tuple[bytes | None, int, int] | None:
    """Open a stream from the hub alone, with no query, when it can; else None.

    Returns the snapshot (None for a resume), the cursor and the head to
    replay up to.  A fresh open takes the hub's snapshot: the newest tick of
    each symbol as of the hub's head, less what retention deleted as the
    follower last saw.  A resume whose last id is inside the hub's window
    (from its floor, and the prune horizon, up to its head) replays from the
    hub.  Anything else (the hub not started, a last id below the window or
    beyond the hub's head, which may be ahead of the log) reads the log.
    """
    if last_id is None:
        held = hub.snapshot(symbols)
        if held is None:
            return None
        head, latest = held
        return sse.opening("snapshot", head, latest), head, head
    window = hub.window()
    if window is None or not window[0] <= last_id <= window[1]:
        return None
    return None, last_id, window[1]


def _replay(engine: Engine, hub: Hub, at: Cursor, streams: Streams) -> Iterator[bytes]:
    """Yield every event after the cursor up to the head read at the opening, then ``live``.

    Stops early when the hub closes: the shutdown notice follows.
    """
    replayed = 0
    while not hub.closed:
        # What the hub still holds needs no query: after a deploy or a blip,
        # reconnecting clients are mostly a few seconds behind.  Only once the
        # hub has reached the log's head as read at the opening, though: the
        # replay covers at least up to it, as the ``live`` marker promises.
        restarted, rewound = _restarted(engine, hub, at)
        if rewound is not None:  # the log moved back under the replay: the reset, then live
            yield rewound
            streams.on_reset("ahead")
            return
        in_hub = hub.started and hub.head >= at.head and not restarted
        held = hub.read(at.cursor, at.wanted, PAGE) if in_hub else None
        if held is not None:
            page, reset, caught_up = held, None, held.cursor >= hub.head
        else:
            page, reset, caught_up = read_page(engine, at)
        if page.messages:
            yield b"".join(page.messages)
        at.cursor, at.sent_id = page.cursor, page.last_id or at.sent_id
        if reset:  # retention overtook the replay, or the log moved back: the reset says so
            streams.on_reset(reset)
            return
        streams.on_sent(len(page.messages), page.last_ts, replay=True)
        replayed += len(page.messages)
        if caught_up:
            yield sse.message("live", {"replayed": replayed, "head": at.cursor})
            return


def live(
    engine: Engine,
    hub: Hub,
    at: Cursor,
    heartbeat: float,
    streams: Streams,
    until_idle: bool = False,
) -> Iterator[bytes]:
    """Yield a stream's live messages and keepalives, from the hub or, when behind, the log.

    Ends with the shutdown notice when the hub closes (between two messages:
    the client reconnects), or with ``until_idle`` as soon as the stream is
    caught up with nothing to send: the broadcaster serves it from there.
    """
    quiet_for = keepalive_after(heartbeat)
    reset = None
    while not hub.closed:
        restarted, rewound = _restarted(engine, hub, at)
        if rewound is not None:
            streams.on_reset("ahead")
            at.quiet_since = time.monotonic()
            yield rewound
            continue
        batch = None if restarted else hub.read(at.cursor, at.wanted, PAGE)
        if batch is None:  # below the hub's floor (a slow client) or a restart: read the log
            if not at.behind and not restarted:
                streams.on_fallback()
            at.behind = not restarted
            batch, reset, _ = read_page(engine, at)
            if reset:
                streams.on_reset(reset)
        else:
            at.behind = False
        messages, at.cursor = batch.messages, batch.cursor
        now = time.monotonic()
        if messages:
            at.quiet_since = now
            yield messages[0] if len(messages) == 1 else b"".join(messages)
            if not (at.behind and reset):
                streams.on_sent(len(messages), batch.last_ts, replay=False)
            at.sent_id = batch.last_id or at.sent_id
            continue
        keepalive = at.keepalive(now, quiet_for)
        if keepalive is not None:
            yield keepalive
            continue
        if until_idle and at.cursor >= hub.head and at.epoch == hub.epoch:
            return
        hub.wait(at.cursor, epoch=at.epoch)
    yield sse.SHUTDOWN_NOTICE
