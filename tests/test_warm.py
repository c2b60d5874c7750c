"""A warm hub: a new process starts holding the log's newest events, and opens cost no query.

After a deploy every client reconnects at once with its ``Last-Event-ID``; a
hub that starts empty sends every one of them to the database.  These tests
start followers on a real log (SQLite file, PostgreSQL), check what the hub
holds against the log, and count the database connections a stream's opening
takes: none for a fresh open or a resume inside the hub's window, one or more
when the opening must read the log (which shows the count works).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, event

from tests.fakes import SYMBOLS, append, in_hub, in_log
from ticker import log, sse
from ticker.config import Retention
from ticker.events import Tick, now_us
from ticker.follower import Follower
from ticker.hub import Hub
from ticker.stream.cursor import Cursor, Subscription, catch_up
from ticker.stream.slots import Streams


def test_a_new_hub_holds_the_newest_capacity_events_of_a_longer_log(engine: Engine) -> None:
    ids = append(engine, 250)
    hub = Hub(capacity=100)
    follower = Follower(engine, hub, poll_interval=60.0, symbols=SYMBOLS)
    follower.start()
    try:
        assert (hub.floor, hub.head, follower.position) == (ids[-101], ids[-1], ids[-1])
        assert in_hub(hub, hub.floor) == in_log(engine, after=ids[-101])
        assert hub.read(hub.floor - 1, None) is None  # older: the log answers
        with engine.connect() as conn:
            assert hub.snapshot(SYMBOLS) == (ids[-1], log.latest(conn, SYMBOLS))
    finally:
        follower.stop()


def test_a_new_hub_holds_the_last_span_of_the_log_when_that_is_more_than_capacity(
    engine: Engine,
) -> None:
    hour_ago = now_us() - 3600 * 1_000_000
    old = log.append(engine, [Tick("AAPL", "1.5", hour_ago + i) for i in range(200)])
    young = append(engine, 300)  # ticks of now: inside the span
    hub = Hub(capacity=100, span=60)
    follower = Follower(engine, hub, poll_interval=60.0, symbols=SYMBOLS)
    follower.start()
    try:
        # All of the last minute (300 events, more than capacity), none older.
        assert (hub.floor, hub.head) == (old[-1], young[-1])
        assert in_hub(hub, hub.floor) == in_log(engine, after=old[-1])
    finally:
        follower.stop()


def test_a_warm_hub_never_claims_what_retention_deleted(engine: Engine) -> None:
    ids = append(engine, 30)
    assert log.prune(engine, Retention(max_events=10), now_us()) == 20
    hub = Hub(capacity=100)
    follower = Follower(engine, hub, poll_interval=60.0, symbols=SYMBOLS)
    follower.start()
    try:
        # Ids up to 20 are gone: a stream resuming there must go to the log,
        # which tells it what it missed (``expired``), not replay the rest silently.
        assert (hub.floor, hub.head) == (ids[19], ids[-1])
        assert in_hub(hub, ids[19]) == in_log(engine, after=0)
        assert hub.read(ids[18], None) is None
    finally:
        follower.stop()


@pytest.fixture
def checkouts(engine: Engine) -> Iterator[list[int]]:
    """Count the connections this thread takes from ``engine``'s pool: every query needs one.

    (The follower's own thread reads the log too: its reads are not the stream's.)
    """
    count, me = [0], threading.get_ident()

    def taken(*_: object) -> None:
        if threading.get_ident() == me:
            count[0] += 1

    event.listen(engine, "checkout", taken)
    yield count
    event.remove(engine, "checkout", taken)


def opening(engine: Engine, hub: Hub, last_id: int | None) -> tuple[list[bytes], Cursor]:
    """Run a stream's opening (the retry, then snapshot, reset or replay); return it."""
    at = Cursor(SYMBOLS[:2])
    asked = Subscription(SYMBOLS[:2], last_id, retry_ms=1000)
    return list(catch_up(engine, hub, at, asked, Streams(100))), at


@pytest.fixture
def warm(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> tuple[list[int], Follower, Hub]:
    """A log of 300 events and a follower whose hub started warm on it: the ids, both."""
    ids = append(engine, 300)
    follower, hub = follow(poll_interval=60.0)
    return ids, follower, hub


def replayed_ids(messages: list[bytes]) -> list[int]:
    """Return the ids of the tick messages among ``messages``."""
    text = b"".join(messages).decode()
    return [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]


def test_opens_the_warm_hub_can_answer_take_no_query(
    engine: Engine, warm: tuple[list[int], Follower, Hub], checkouts: list[int]
) -> None:
    ids, _, hub = warm
    checkouts[0] = 0

    # A fresh open: the snapshot is the hub's, as of its head.
    messages, at = opening(engine, hub, None)
    assert checkouts[0] == 0
    assert messages[1].startswith(f"id: {ids[-1]}\nevent: snapshot\n".encode())
    with engine.connect() as conn:
        expected = sse.opening("snapshot", ids[-1], log.latest(conn, SYMBOLS[:2]))
    assert messages[1] == expected and at.cursor == ids[-1]

    # A resume inside the window: the replay is the hub's, every event of the
    # stream's symbols after the last id, then live.
    checkouts[0] = 0
    messages, at = opening(engine, hub, ids[150])
    assert checkouts[0] == 0
    wanted = [i for i, symbol, _ in in_log(engine, after=ids[150]) if symbol in SYMBOLS[:2]]
    assert replayed_ids(messages[1:-1]) == wanted
    assert b"event: live" in messages[-1] and at.cursor == ids[-1]


def test_opens_the_hub_cannot_answer_read_the_log(
    engine: Engine, warm: tuple[list[int], Follower, Hub], checkouts: list[int]
) -> None:
    ids, _, hub = warm
    hub.restart(ids[200], valid_upto=ids[-1])  # as if trimmed: the hub holds only 201 on
    hub.publish([(i, s, 0, b"") for i, s, _ in in_log(engine, after=ids[200])])
    checkouts[0] = 0
    opening(engine, hub, ids[100])  # below the hub's floor: the replay reads the log
    assert checkouts[0] >= 2
    checkouts[0] = 0
    messages, _ = opening(engine, hub, ids[-1] + 5)  # beyond the hub: the log says ahead
    assert checkouts[0] >= 1
    assert b'"reason":"ahead"' in messages[1]


def test_a_resume_below_the_prune_horizon_reads_the_log_and_is_told_expired(
    engine: Engine, warm: tuple[list[int], Follower, Hub], checkouts: list[int]
) -> None:
    ids, follower, hub = warm
    assert log.prune(engine, Retention(max_events=100), now_us()) == 200
    follower.poll()  # as after the prune's wake-up (or NOTIFY): the hub learns the horizon
    assert hub.window() == (ids[199], ids[-1])
    checkouts[0] = 0
    messages, _ = opening(engine, hub, ids[150])  # still in memory, but deleted from the log
    assert checkouts[0] >= 1
    assert b"event: reset" in messages[1] and b'"reason":"expired"' in messages[1]
    # A fresh open from the hub leaves out a symbol whose newest tick went.
    append(engine, 1, symbol=SYMBOLS[0])
    follower.poll()
    assert log.prune(engine, Retention(max_events=1), now_us()) > 0
    follower.poll()
    checkouts[0] = 0
    messages, _ = opening(engine, hub, None)
    assert checkouts[0] == 0
    with engine.connect() as conn:
        position = log.position(conn)
        expected = sse.opening("snapshot", position.head, log.latest(conn, SYMBOLS[:2]))
    assert messages[1] == expected and b"ETH-USD" not in messages[1]
