"""The follower on its own: a real log (SQLite file, PostgreSQL), a real hub, no gunicorn."""

from __future__ import annotations

import itertools
import logging
import random
import statistics
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, event, text

from tests.fakes import (
    SQLITE_ONLY,
    SYMBOLS,
    append,
    captured,
    eventually,
    in_hub,
    in_log,
    started_since,
)
from ticker import log
from ticker.config import Retention
from ticker.db import make_engine
from ticker.events import Event, Tick, now_us
from ticker.follower import Follower
from ticker.hub import Hub

QUIET = 60.0  # a poll or pulse interval that never comes within a test


def test_every_committed_event_reaches_the_hub_once_and_in_id_order(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    before = append(engine, 5)  # before the start: the hub begins warm, at the head
    _, hub = follow(poll_interval=0.01)
    assert (hub.floor, hub.head) == (0, before[-1])
    assert in_hub(hub, 0) == in_log(engine, after=0)
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                append(engine, rng.randint(1, 5))
                time.sleep(rng.random() / 200)  # spread the commits over the follower's polls
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert not errors, errors[0]
    expected = in_log(engine, after=before[-1])
    assert len(expected) >= 160
    eventually(lambda: hub.head == expected[-1][0], "the hub at the log's head", 10)
    # The hub keeps only ids above its head, so an event published late or out of
    # order would be missing here, and one published twice would not add a row.
    assert in_hub(hub, before[-1]) == expected
    with engine.connect() as conn:
        latest = log.latest(conn, SYMBOLS)
    assert hub.snapshot(SYMBOLS) == (hub.head, latest)  # what a new stream's snapshot shows


def test_appends_handed_over_and_read_back_reach_the_hub_once_in_order(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    """Half the writers hand their commits to the hub (as this process's API does), half
    only commit (as other processes do): the hub holds the log, each event once, in order."""
    follower, hub = follow(poll_interval=0.01)
    start = hub.head
    errors: list[BaseException] = []

    def write(seed: int, hand_over: bool) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                ticks = [
                    Tick(SYMBOLS[i % 3], f"{seed}{i}.5", now_us()) for i in range(rng.randint(1, 5))
                ]
                before, ids = log.append_after(engine, ticks)
                if hand_over:
                    events = [
                        Event(i, t.symbol, t.price, t.ts) for i, t in zip(ids, ticks, strict=True)
                    ]
                    follower.published(before, events)  # or not, when another came between
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(n, n % 2 == 0)) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert not errors, errors[0]
    eventually(lambda: hub.head == in_log(engine)[-1][0], "the hub at the log's head", 10)
    assert in_hub(hub, start) == in_log(engine, after=start)


@SQLITE_ONLY  # no LISTEN: the follower reads nothing until the test wakes it
def test_an_append_is_handed_over_only_when_it_follows_on(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    follower, hub = follow(poll_interval=QUIET)
    tick = Tick("AAPL", "9.5", now_us())
    before, ids = log.append_after(engine, [tick])
    assert before == follower.position == hub.head
    assert follower.published(before, [Event(ids[0], tick.symbol, tick.price, tick.ts)])
    assert in_hub(hub, before) == in_log(engine, after=before)  # not read back: handed over
    first = append(engine, 2)  # another process's commit, not read yet
    before, ids = log.append_after(engine, [Tick("AAPL", "1.5", now_us())])
    assert before == first[-1] and follower.position < before
    assert not follower.published(before, [Event(ids[0], "AAPL", "1.5", now_us())])
    assert hub.head < ids[0]  # nothing out of order reached the hub
    follower.wake()
    eventually(lambda: hub.head == ids[0], "the follower read both commits")
    assert in_hub(hub, 0) == in_log(engine)


@SQLITE_ONLY
def test_wake_makes_an_append_visible_at_once(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    follower, hub = follow(poll_interval=QUIET, pulse_interval=QUIET)
    for _ in range(3):
        [added] = append(engine)
        follower.wake()
        eventually(lambda a=added: hub.head == a, "the woken follower publishing", 2)
    assert [i for i, _, _ in in_hub(hub, 0)] == [i for i, _, _ in in_log(engine)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_another_process_append_wakes_the_follower(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    follower, hub = follow(pulse_interval=QUIET)
    follower.poll_interval = QUIET  # only LISTEN/NOTIFY can wake it within the test

    def listening() -> bool:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE query = :q AND state = 'idle'"
            return bool(conn.scalar(text(query), {"q": f"LISTEN {log.CHANNEL}"}))

    eventually(listening, "the follower listening", 10)
    other = make_engine(str(engine.url.render_as_string(hide_password=False)))  # another writer
    try:
        for _ in range(3):
            [added] = append(other)
            eventually(lambda a=added: hub.head == a, "the notified follower publishing", 3)
    finally:
        other.dispose()


def _listening(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE query = :q AND state = 'idle'"
        return bool(conn.scalar(text(query), {"q": f"LISTEN {log.CHANNEL}"}))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_group_being_handed_over_is_not_read_back(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    """The notification of this process's own group comes as the group is handed over:
    while the group is being written the follower leaves it to the hand-over."""
    writing = threading.Event()
    follower, hub = follow(pulse_interval=QUIET, appending=writing.is_set)
    follower.poll_interval = QUIET  # only notifications (and hand-overs) move it
    eventually(lambda: _listening(engine), "the follower listening", 10)
    reads: list[object] = []
    event.listen(engine, "checkout", lambda *_: reads.append(None))  # the follower's engine
    group = make_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        for n in range(3):
            writing.set()  # as GroupCommit.leading: from a group's first caller to its hand-over
            ticks = [Tick(SYMBOLS[i % 3], f"{n}{i}.5", now_us()) for i in range(50)]
            before, ids = log.append_after(group, ticks)
            eventually(lambda i=ids[-1]: follower._notified == i, "the group's notification", 3)
            time.sleep(0.05)  # ten times the deferral: a follower that read would have by now
            events = [Event(i, t.symbol, t.price, t.ts) for i, t in zip(ids, ticks, strict=True)]
            assert follower.published(before, events)  # the follower had not read them
            writing.clear()
    finally:
        group.dispose()
    assert reads == []
    assert in_hub(hub, 0) == in_log(engine)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_another_process_append_is_read_once_this_process_stops_writing(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    """Deferred while this process writes a group that then fails (no hand-over comes):
    the follower reads the other process's append as soon as the group is over."""
    writing = threading.Event()
    follower, hub = follow(pulse_interval=QUIET, appending=writing.is_set)
    follower.poll_interval = QUIET
    eventually(lambda: _listening(engine), "the follower listening", 10)
    other = make_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        writing.set()
        [added] = append(other)
        eventually(lambda: follower._notified == added, "the notification", 3)
        time.sleep(0.05)
        assert hub.head < added  # left to the group's hand-over
        writing.clear()  # the group failed: nothing is handed over
        eventually(lambda: hub.head == added, "the follower reading the other's append", 1)
    finally:
        other.dispose()
    assert in_hub(hub, 0) == in_log(engine)


@SQLITE_ONLY
def test_the_hub_is_pulsed_at_the_pulse_interval(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    pulses: list[float] = []
    _, hub = follow(
        poll_interval=QUIET, pulse_interval=0.1, on_pulse=lambda: pulses.append(time.monotonic())
    )
    started = time.monotonic()
    assert hub.wait(hub.head, timeout=5)  # a pulse wakes a waiting stream without news
    assert time.monotonic() - started < 1
    eventually(lambda: len(pulses) >= 11, "ten pulse intervals", 10)
    gaps = [b - a for a, b in itertools.pairwise(pulses[:11])]
    assert min(gaps) >= 0.09, gaps  # never more often than asked
    assert statistics.median(gaps) < 0.2, gaps  # and about as often


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_database_error_is_survived_and_the_follower_catches_up(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    with captured("ticker.follower", logging.ERROR) as messages:
        follower, hub = follow(pulse_interval=0.1)
        [first] = append(engine)
        eventually(lambda: hub.head == first, "the first event published")
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE ticks RENAME TO ticks_away"))
        eventually(
            lambda: any("could not read the log" in m for m in messages), "the error logged", 10
        )
        with engine.begin() as conn:  # committed while the follower cannot read
            for i in range(3):
                conn.execute(
                    text("INSERT INTO ticks_away (symbol, price, ts) VALUES ('AAPL', :p, :ts)"),
                    {"p": f"{i + 1}.5", "ts": now_us()},
                )
            conn.execute(text("ALTER TABLE ticks_away RENAME TO ticks"))
        later = append(engine, 2)
        eventually(lambda: hub.head == later[-1], "the follower caught up", 15)
    assert follower.running
    assert in_hub(hub, 0) == in_log(engine)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_stop_ends_the_follower(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    others = set(threading.enumerate())
    follower, hub = follow(poll_interval=QUIET, pulse_interval=QUIET)
    assert follower.running
    follower.stop()
    eventually(lambda: not follower.running, "the follower thread ended", 2)
    eventually(lambda: not started_since(others), "the follower's threads ended (LISTEN too)", 5)
    head = hub.head
    append(engine)
    follower.wake()
    assert not follower.running and hub.head == head


@SQLITE_ONLY  # on PostgreSQL the append's NOTIFY wakes the follower before the prune
def test_events_pruned_before_the_follower_read_them_are_never_skipped_silently(
    engine: Engine, follow: Callable[..., tuple[Follower, Hub]]
) -> None:
    follower, hub = follow(poll_interval=QUIET, pulse_interval=QUIET)
    start = hub.head
    ids = append(engine, 10)
    # Retention overtakes the follower, which has not read these yet.
    assert log.prune(engine, Retention(max_events=2), now_us()) == 8
    follower.wake()
    eventually(lambda: hub.head == ids[-1], "the follower past the pruned events", 5)
    # A stream the hub served up to ``start`` must not be handed the two survivors
    # as if nothing came between: the hub sends it to the log, which says reset.
    assert hub.read(start, None) is None
    assert hub.floor == ids[-1]
    with engine.connect() as conn:
        assert hub.snapshot(SYMBOLS) == (hub.head, log.latest(conn, SYMBOLS))
