"""The event log on a real, migrated SQLite file: ids, reads, retention, concurrency."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, text

from ticker import log
from ticker.config import Retention
from ticker.db import writing
from ticker.events import Tick
from ticker.state import app_state

SECOND = 1_000_000
T0 = 1_795_255_200_000_000  # 2026-11-21T10:00:00Z


@pytest.fixture
def engine(app: Any) -> Engine:
    return app_state(app).engine


def ticks(n: int, symbol: str = "BTC-USD", ts: int = T0, step: int = SECOND) -> list[Tick]:
    return [Tick(symbol, f"{100 + i}.00", ts + i * step) for i in range(n)]


def table_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(r[0]) for r in conn.execute(text("SELECT id FROM ticks ORDER BY id"))]


def test_append_returns_increasing_ids_in_the_order_given(engine: Engine) -> None:
    batch = [Tick("BTC-USD", "1.10", T0), Tick("AAPL", "2.20", T0), Tick("BTC-USD", "3.30", T0)]
    assert log.append(engine, batch) == [1, 2, 3]
    more = ticks(500, "ETH-USD")
    ids = log.append(engine, more)
    assert ids == list(range(4, 504))
    with engine.connect() as conn:
        events = log.read_after(conn, 0, None, 1000)
    assert [(e.id, e.symbol, e.price) for e in events[:3]] == [
        (1, "BTC-USD", "1.10"),
        (2, "AAPL", "2.20"),
        (3, "BTC-USD", "3.30"),
    ]
    assert [e.price for e in events[3:]] == [t.price for t in more]


def test_symbols_that_mean_something_in_sql_arrays_come_back_as_written(engine: Engine) -> None:
    # PostgreSQL appends pass the batch as arrays: none of these may be read as syntax.
    symbols = ["NULL", "{A}", '"Q"', "B\\S", "X'Y", "(Z)"]
    ids = log.append(engine, [Tick(s, f"{i + 1}.5", T0) for i, s in enumerate(symbols)])
    with engine.connect() as conn:
        events = log.read_after(conn, 0, None, 10)
    assert [(e.id, e.symbol, e.price) for e in events] == [
        (id, s, f"{i + 1}.5") for i, (id, s) in enumerate(zip(ids, symbols, strict=True))
    ]


def test_append_of_nothing_writes_nothing(engine: Engine) -> None:
    assert log.append(engine, []) == []
    assert log.head(engine) == 0


def test_price_and_ts_come_back_exactly(engine: Engine) -> None:
    (id,) = log.append(engine, [Tick("PEPE-USD", "0.00001234", T0 + 123_456)])
    with engine.connect() as conn:
        (event,) = log.read_after(conn, 0, None, 10)
    assert (event.id, event.price, event.ts) == (id, "0.00001234", T0 + 123_456)
    assert event.to_dict()["ts"] == "2026-11-21T10:00:00.123456Z"


def test_ids_are_never_reused_after_the_newest_rows_are_deleted(engine: Engine) -> None:
    log.append(engine, ticks(5))
    with writing(engine) as conn:
        conn.execute(text("DELETE FROM ticks WHERE id >= 3"))
    assert log.append(engine, ticks(1)) == [6]


def test_ids_are_never_reused_after_pruning_everything(engine: Engine) -> None:
    log.append(engine, ticks(5))
    assert log.prune(engine, Retention(max_age=1.0), now_us=T0 + 3600 * SECOND) == 5
    assert table_ids(engine) == []
    assert log.head(engine) == 5
    assert log.append(engine, ticks(2)) == [6, 7]


def test_position_and_head(engine: Engine) -> None:
    with engine.connect() as conn:
        assert log.position(conn) == log.Position(head=0, pruned_through=0)
    log.append(engine, ticks(10))
    assert log.head(engine) == 10
    log.prune(engine, Retention(max_events=4), now_us=T0)
    with engine.connect() as conn:
        assert log.position(conn) == log.Position(head=10, pruned_through=6)


def test_read_after_filters_limits_and_stops_at_upto(engine: Engine) -> None:
    symbols = ["BTC-USD", "AAPL", "ETH-USD"]
    log.append(engine, [Tick(symbols[i % 3], f"{i + 1}.0", T0) for i in range(30)])
    with engine.connect() as conn:
        every = log.read_after(conn, 0, None, 100)
        assert [e.id for e in every] == list(range(1, 31))
        assert [e.id for e in log.read_after(conn, 25, None, 100)] == [26, 27, 28, 29, 30]
        btc = log.read_after(conn, 0, ["BTC-USD"], 100)
        assert [e.id for e in btc] == list(range(1, 31, 3))
        assert {e.symbol for e in btc} == {"BTC-USD"}
        two = log.read_after(conn, 10, ["AAPL", "ETH-USD"], 100)
        assert [e.id for e in two] == [i for i in range(11, 31) if i % 3 != 1]
        assert [e.id for e in log.read_after(conn, 0, ["AAPL"], 3)] == [2, 5, 8]
        assert [e.id for e in log.read_after(conn, 0, None, 100, upto=4)] == [1, 2, 3, 4]
        assert [e.id for e in log.read_after(conn, 3, ["BTC-USD"], 100, upto=13)] == [4, 7, 10, 13]
        assert log.read_after(conn, 30, None, 100) == []
        assert log.read_after(conn, 0, ["MSFT"], 100) == []


def test_latest_returns_each_symbols_newest_event_in_the_order_asked(engine: Engine) -> None:
    log.append(
        engine,
        [
            Tick("BTC-USD", "1", T0),
            Tick("AAPL", "2", T0),
            Tick("BTC-USD", "3", T0),
            Tick("ETH-USD", "4", T0),
        ],
    )
    with engine.connect() as conn:
        found = log.latest(conn, ["ETH-USD", "MSFT", "BTC-USD", "AAPL"])
    assert [(e.symbol, e.id, e.price) for e in found] == [
        ("ETH-USD", 4, "4"),
        ("BTC-USD", 3, "3"),
        ("AAPL", 2, "2"),
    ]


def test_latest_any(engine: Engine) -> None:
    with engine.connect() as conn:
        assert log.latest_any(conn) is None
    log.append(engine, [Tick("BTC-USD", "1", T0), Tick("AAPL", "2", T0 + 5)])
    with engine.connect() as conn:
        newest = log.latest_any(conn)
    assert newest is not None
    assert (newest.id, newest.symbol, newest.ts) == (2, "AAPL", T0 + 5)


def test_prune_by_count_keeps_the_newest_events(engine: Engine) -> None:
    log.append(engine, ticks(20))
    assert log.prune(engine, Retention(max_events=5), now_us=T0, batch=3) == 15
    assert table_ids(engine) == [16, 17, 18, 19, 20]
    with engine.connect() as conn:
        assert log.position(conn) == log.Position(head=20, pruned_through=15)
    assert log.prune(engine, Retention(max_events=5), now_us=T0) == 0


def test_prune_by_age_deletes_only_older_events(engine: Engine) -> None:
    log.append(engine, ticks(10, step=60 * SECOND))  # one a minute from T0
    now = T0 + 9 * 60 * SECOND
    # Keep the last 3.5 minutes: ts >= now - 210s, i.e. minutes 6..9 (ids 7..10).
    assert log.prune(engine, Retention(max_age=210.0), now_us=now, batch=4) == 6
    assert table_ids(engine) == [7, 8, 9, 10]
    with engine.connect() as conn:
        assert log.position(conn).pruned_through == 6


def test_prune_by_age_keeps_a_contiguous_suffix_when_times_go_backwards(engine: Engine) -> None:
    # An outside producer posted an old time after newer ones: pruning stops at the
    # first young event instead of punching a hole in the middle of the log.
    stamps = [0, 10, 500, 20, 600]  # seconds after T0
    log.append(engine, [Tick("BTC-USD", "1", T0 + s * SECOND) for s in stamps])
    assert log.prune(engine, Retention(max_age=300.0), now_us=T0 + 700 * SECOND) == 2
    assert table_ids(engine) == [3, 4, 5]


def test_prune_with_both_limits_applies_the_stricter(engine: Engine) -> None:
    log.append(engine, ticks(10, step=60 * SECOND))
    now = T0 + 9 * 60 * SECOND
    both = Retention(max_age=3600.0, max_events=4)  # the count is stricter
    assert log.prune(engine, both, now_us=now) == 6
    assert table_ids(engine) == [7, 8, 9, 10]
    both = Retention(max_age=90.0, max_events=4)  # now the age is stricter
    assert log.prune(engine, both, now_us=now) == 2
    assert table_ids(engine) == [9, 10]


def test_prune_without_retention_deletes_nothing(engine: Engine) -> None:
    log.append(engine, ticks(3))
    assert log.prune(engine, Retention(), now_us=T0 + 10**12) == 0
    assert table_ids(engine) == [1, 2, 3]


def test_head_survives_pruning_everything_and_reads_resume_after_it(engine: Engine) -> None:
    log.append(engine, ticks(8))
    log.prune(engine, Retention(max_age=1.0), now_us=T0 + 10**9)
    with engine.connect() as conn:
        assert log.position(conn) == log.Position(head=8, pruned_through=8)
        assert log.latest_any(conn) is None
    (new,) = log.append(engine, ticks(1))
    assert new == 9
    with engine.connect() as conn:
        assert log.position(conn) == log.Position(head=9, pruned_through=8)
        assert [e.id for e in log.read_after(conn, 8, None, 10)] == [9]


def test_concurrent_appends_get_unique_ids_in_commit_order(engine: Engine) -> None:
    writers, rounds = 6, 40
    start = threading.Barrier(writers + 1)
    commit_order: list[int] = []  # filled while holding the write lock, so in commit order
    order_lock = threading.Lock()
    per_thread: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    done = threading.Event()
    reader_views: list[str] = []

    def writer(n: int) -> None:
        mine: list[int] = []
        try:
            start.wait()
            for r in range(rounds):
                batch = [Tick("BTC-USD", f"{n}.{r}{k}", T0) for k in range(1 + r % 3)]
                with writing(engine) as conn:
                    ids = log.insert_ticks(conn, batch)
                    with order_lock:
                        commit_order.extend(ids)
                mine.extend(ids)
        except BaseException as exc:
            errors.append(exc)
        per_thread[n] = mine

    def reader() -> None:
        # A reader that has seen ids up to N must never later find a new id below N.
        seen: list[int] = []
        start.wait()
        while not done.is_set():
            now = table_ids(engine)
            if seen and [i for i in now if i <= seen[-1]] != seen:
                reader_views.append(f"saw {seen[-5:]}, then {now[: len(seen) + 1][-6:]}")
            seen = now

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    watcher = threading.Thread(target=reader)
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    watcher.join(60)
    assert not errors, errors
    assert reader_views == []
    everything = table_ids(engine)
    union = sorted(i for ids in per_thread.values() for i in ids)
    assert union == everything, "every id handed out is in the table, once"
    assert len(set(union)) == len(union)
    for ids in per_thread.values():
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert commit_order == everything, "ids grow in commit order"
    assert everything == list(range(1, len(everything) + 1))
