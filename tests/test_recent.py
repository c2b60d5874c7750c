"""The rollup folds the follower's latest events from memory, and the candles stay exact.

``RecentEvents`` must only ever answer for a range it holds whole; the rollup
that uses it must give the candles the brute force computes from the log, and
read no event back from the database while the buffer covers the range.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from tests.brute import check_all, post
from ticker import candles
from ticker.candles.recent import RecentEvents
from ticker.events import Event, format_ts, now_us
from ticker.state import app_state


def events(ids: list[int]) -> list[Event]:
    return [Event(i, "AAPL", f"{i}.5", i * 1000, None) for i in ids]


def test_it_answers_only_for_a_range_it_holds_whole() -> None:
    recent = RecentEvents(limit=5)
    recent.add(0, events([1, 2]))
    assert recent.between(0, 2, 10) is None  # not switched on: nothing kept
    recent.keep(True)
    recent.add(10, events([12, 13]))  # every event after 10 up to 13
    assert recent.between(9, 13, 10) is None  # 10 itself may exist: not held
    assert [e.id for e in recent.between(10, 13, 10) or []] == [12, 13]
    assert [e.id for e in recent.between(12, 13, 10) or []] == [13]
    assert recent.between(13, 20, 10) is None  # past the end: the log may have more
    recent.add(13, events([15, 16, 17, 18, 19]))  # follows on: 7 held, limit 5: 2 go
    assert recent.between(12, 18, 10) is None
    assert [e.id for e in recent.between(13, 17, 2) or []] == [15, 16]
    recent.add(30, events([31]))  # a page that does not follow on starts again
    assert recent.between(12, 31, 10) is None
    assert [e.id for e in recent.between(30, 31, 10) or []] == [31]
    recent.forget_through(31)
    assert recent.between(31, 40, 10) is None
    recent.keep(False)
    recent.add(31, events([32]))
    assert recent.between(31, 32, 10) is None


@settings(max_examples=200, deadline=None)
@given(
    pages=st.lists(st.tuples(st.booleans(), st.integers(1, 4)), max_size=12),
    limit=st.integers(1, 8),
    after=st.integers(0, 40),
    upto=st.integers(0, 40),
)
def test_every_answer_is_the_log_itself(
    pages: list[tuple[bool, int]], limit: int, after: int, upto: int
) -> None:
    """Whatever it was fed, an answer is the log's events from the range's start on, or None."""
    log_ids = [i for i in range(1, 41) if i % 3]  # ids with holes, as sequences leave them
    recent = RecentEvents(limit=limit)
    recent.keep(True)
    position = 0
    for restart, size in pages:
        if restart:  # the follower restarted further on
            position = min(40, position + size)
        page = [i for i in log_ids if i > position][:size]
        if page:
            recent.add(position, events(page))
            position = page[-1]
    answer = recent.between(after, upto, 100)
    if answer is not None:
        held_to = min(upto, recent.end)  # a range may run past what is held: its first part
        assert [e.id for e in answer] == [i for i in log_ids if after < i <= held_to]


def count_tick_reads(engine: Any) -> list[str]:
    """Record the statements that read events from ``ticks`` (SQLite's trace callback)."""
    seen: list[str] = []

    @event.listens_for(engine, "connect")
    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(
            lambda sql: seen.append(sql) if "SELECT id, symbol, price, ts" in sql else None
        )

    engine.dispose()  # new connections: traced
    return seen


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_rollup_folds_what_the_follower_read_without_reading_it_again(
    app: Flask, client: Any
) -> None:
    state = app_state(app)
    recent = state.producer.recent
    assert recent is state.follower.recent is not None
    recent.keep(True)
    start = now_us() - 3_600_000_000
    ticks = [
        {"symbol": "AAPL", "price": f"{100 + i % 7}.25", "size": "1.5", "ts": format_ts(t)}
        for i, t in enumerate(range(start, start + 50 * 7_000_000, 7_000_000))
    ]
    written = post(client, ticks)
    while state.follower.poll():  # what the follower's thread does
        pass
    reads = count_tick_reads(state.engine)
    assert candles.rollup(state.engine, recent=recent) == 50
    assert reads == []
    check_all(client, written, ["AAPL"])
    # Past the buffer's end the rollup reads the log, and the candles stay exact.
    written += post(client, ticks[:10])
    assert candles.rollup(state.engine, recent=recent) == 10
    assert len(reads) >= 1
    check_all(client, written, ["AAPL"])


def test_the_producer_keeps_recent_events_only_while_it_holds_the_lease(make_app: Any) -> None:
    app = make_app(source="none", symbols="AAPL")
    producer = app_state(app).producer
    recent = producer.recent
    producer.rollup()  # not the holder: the buffer stays off
    recent.add(0, events([1]))
    assert recent.between(0, 1, 10) is None
    producer.produce()  # claims the lease
    producer.rollup()
    recent.add(0, events([1]))
    assert [e.id for e in recent.between(0, 1, 10) or []] == [1]
