"""The hub: newest encoded events of one process, read after a cursor, and wake-ups."""

from __future__ import annotations

import threading
import time

import pytest

from ticker.events import Event
from ticker.hub import Batch, Hub, Stretch


def item(id: int, symbol: str = "BTC-USD") -> tuple[int, str, int, bytes]:
    return (id, symbol, 1000 * id, f"<{id}:{symbol}>".encode())


def msg(id: int, symbol: str = "BTC-USD") -> bytes:
    return item(id, symbol)[3]


def test_read_returns_the_events_after_the_cursor_in_order() -> None:
    hub = Hub()
    hub.publish([item(1), item(2), item(3)])
    assert hub.head == 3
    assert hub.read(0, None) == Batch([msg(1), msg(2), msg(3)], 3, 3)
    assert hub.read(1, None) == Batch([msg(2), msg(3)], 3, 3)
    assert hub.read(3, None) == Batch([], 3, None)


def test_read_honours_the_limit_and_continues_from_the_returned_cursor() -> None:
    hub = Hub()
    hub.publish([item(i) for i in range(1, 8)])
    first = hub.read(0, None, limit=3)
    assert first == Batch([msg(1), msg(2), msg(3)], 3, 3)
    second = hub.read(first.cursor, None, limit=3)
    assert second == Batch([msg(4), msg(5), msg(6)], 6, 6)
    assert hub.read(second.cursor, None, limit=3) == Batch([msg(7)], 7, 7)


def test_read_filters_by_symbol_and_moves_the_cursor_past_other_symbols() -> None:
    hub = Hub()
    hub.publish([item(1, "BTC-USD"), item(2, "AAPL"), item(3, "BTC-USD"), item(4, "AAPL")])
    batch = hub.read(0, {"BTC-USD"})
    assert batch == Batch([msg(1), msg(3)], cursor=4, last_id=3)
    # Only other symbols' events after the cursor: nothing to send, yet served up to 4.
    assert hub.read(3, {"BTC-USD"}) == Batch([], cursor=4, last_id=None)
    assert hub.read(0, {"MSFT"}) == Batch([], cursor=4, last_id=None)


def test_read_with_a_limit_and_a_filter_counts_every_event_scanned() -> None:
    hub = Hub()
    hub.publish([item(1, "AAPL"), item(2, "AAPL"), item(3, "BTC-USD")])
    assert hub.read(0, {"BTC-USD"}, limit=2) == Batch([], cursor=2, last_id=None)
    assert hub.read(2, {"BTC-USD"}, limit=2) == Batch([msg(3, "BTC-USD")], 3, 3)


def test_publish_ignores_duplicates_and_old_ids() -> None:
    hub = Hub()
    hub.publish([item(1), item(2)])
    hub.publish([item(2), item(1), item(3)])
    hub.publish([item(3)])
    assert hub.head == 3
    assert hub.read(0, None) == Batch([msg(1), msg(2), msg(3)], 3, 3)


def test_ids_may_have_gaps() -> None:
    hub = Hub()
    hub.publish([item(5), item(9)])
    assert hub.read(6, None) == Batch([msg(9)], 9, 9)
    assert hub.read(0, None) == Batch([msg(5), msg(9)], 9, 9)


def test_trimming_raises_the_floor_and_reads_below_it_answer_none() -> None:
    hub = Hub(capacity=4)
    hub.publish([item(i) for i in range(1, 7)])  # 6 > 4 + 4 // 4: trimmed back to 4
    assert hub.floor == 2
    assert hub.read(0, None) is None
    assert hub.read(1, None) is None
    assert hub.read(2, None) == Batch([msg(3), msg(4), msg(5), msg(6)], 6, 6)
    assert hub.read(2, {"AAPL"}) == Batch([], 6, None)  # the floor test ignores the filter


def test_stretch_gives_every_symbol_after_the_position_up_to_a_stop_or_a_limit() -> None:
    hub = Hub()
    hub.publish([item(1), item(2, "ETH-USD"), item(4), item(7, "AAPL")])  # ids with gaps
    every = Stretch([2, 4, 7], ["ETH-USD", "BTC-USD", "AAPL"], [2000, 4000, 7000],
                 [msg(2, "ETH-USD"), msg(4), msg(7, "AAPL")], 7)  # fmt: skip
    assert hub.stretch(1) == every
    assert hub.stretch(1, limit=2) == Stretch(every.ids[:2], every.symbols[:2], every.ts[:2],
                                        every.messages[:2], 4)  # fmt: skip
    # A stop between two ids: served up to it, though no event has that id.
    assert hub.stretch(1, upto=5) == Stretch([2, 4], every.symbols[:2], every.ts[:2],
                                       every.messages[:2], 5)  # fmt: skip
    assert hub.stretch(1, upto=99).cursor == 7, "not past the head: the rest is not published"
    assert hub.stretch(7) == Stretch([], [], [], [], 7)


def test_stretch_below_the_floor_answers_none() -> None:
    hub = Hub(capacity=4)
    hub.publish([item(i) for i in range(1, 7)])
    assert hub.stretch(1) is None
    stretch = hub.stretch(2)
    assert stretch is not None and stretch.ids == [3, 4, 5, 6] and stretch.cursor == 6


def test_the_hub_never_holds_more_than_capacity_plus_a_quarter() -> None:
    hub = Hub(capacity=100)
    for i in range(1, 1001):
        hub.publish([item(i)])
        held = hub.read(hub.floor, None, limit=10_000)
        assert held is not None
        assert len(held.messages) <= 125
        assert held.messages[-1] == msg(i)
        assert held.messages[0] == msg(hub.floor + 1)  # contiguous from the floor


def test_the_hub_also_holds_the_last_span_up_to_five_times_capacity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("ticker.hub.time.monotonic", lambda: now[0])
    hub = Hub(capacity=100, span=30)
    for i in range(1, 1001):  # one event every 0.1 s for 100 s
        hub.publish([item(i)])
        now[0] += 0.1
    held = hub.read(hub.floor, None, limit=10_000)
    assert held is not None and held.messages[-1] == msg(1000)
    # Events 701 on arrived in the last 30 s: all held, and at most a trim's
    # chunk (a quarter of capacity) of older ones.
    assert 300 <= len(held.messages) <= 325 and hub.floor <= 700
    assert held.messages[0] == msg(hub.floor + 1)

    hub = Hub(capacity=100, span=10**6)  # a span longer than the run: memory bounds it
    for i in range(1, 2001):
        hub.publish([item(i)])
        assert hub.head - hub.floor <= 500


def test_restart_forgets_everything_and_holds_events_from_the_position() -> None:
    hub = Hub()
    hub.publish([item(1), item(2)])
    hub.restart(10)
    assert (hub.floor, hub.head) == (10, 10)
    assert hub.read(2, None) is None  # below the new floor: the stream must read the log
    assert hub.read(10, None) == Batch([], 10, None)
    hub.publish([item(9), item(10), item(11)])
    assert hub.read(10, None) == Batch([msg(11)], 11, 11)


def test_wait_returns_at_once_when_an_event_after_the_cursor_is_held() -> None:
    hub = Hub()
    hub.publish([item(1)])
    started = time.monotonic()
    assert hub.wait(0, timeout=30) is True
    assert time.monotonic() - started < 5


def test_wait_times_out_when_nothing_is_published() -> None:
    hub = Hub()
    hub.publish([item(1)])
    started = time.monotonic()
    assert hub.wait(1, timeout=0.05) is False
    assert time.monotonic() - started >= 0.04


def test_wait_wakes_every_waiter_when_another_thread_publishes() -> None:
    hub = Hub()
    hub.publish([item(1)])
    waiters = 5
    ready = threading.Barrier(waiters + 1)
    results: list[tuple[bool, float]] = []
    lock = threading.Lock()

    def waiter() -> None:
        ready.wait()
        started = time.monotonic()
        woke = hub.wait(1, timeout=30)
        with lock:
            results.append((woke, time.monotonic() - started))

    threads = [threading.Thread(target=waiter) for _ in range(waiters)]
    for t in threads:
        t.start()
    ready.wait()
    threads[0].join(0.05)
    assert threads[0].is_alive(), "wait() must block while nothing new is published"
    hub.publish([item(2)])
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a waiter was not woken by the publish"
    assert len(results) == waiters
    assert all(woke and elapsed < 10 for woke, elapsed in results)
    assert hub.read(1, None) == Batch([msg(2)], 2, 2)


def test_no_event_is_lost_between_a_read_and_a_wait() -> None:
    """A reader looping read → wait sees every id a concurrent publisher publishes, once."""
    hub = Hub(capacity=20_000)
    total = 3000
    seen: list[int] = []

    def reader() -> None:
        cursor = 0
        while cursor < total:
            batch = hub.read(cursor, None, limit=50)
            assert batch is not None
            seen.extend(int(m.decode()[1:].split(":")[0]) for m in batch.messages)
            cursor = batch.cursor
            if not batch.messages and not hub.wait(cursor, timeout=10):
                return  # a missed wake-up: the assertion below reports it

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(1, total + 1):
        hub.publish([item(i)])
    thread.join(30)
    assert not thread.is_alive()
    assert seen == list(range(1, total + 1))


def test_every_stream_gets_the_same_encoded_message() -> None:
    """An event is encoded once per process: readers share the one bytes object."""
    hub = Hub(capacity=100)
    message = b"id: 1\nevent: tick\ndata: {}\n\n"
    hub.publish([(1, "AAPL", 5, message)])
    first, second = hub.read(0, {"AAPL"}), hub.read(0, None)
    assert first is not None and second is not None
    assert first.messages[0] is message and second.messages[0] is message


def test_a_batch_carries_the_tick_time_of_its_last_message() -> None:
    hub = Hub(capacity=100)
    hub.publish([item(1, "AAPL"), item(2, "MSFT"), item(3, "AAPL"), item(4, "MSFT")])
    mine = hub.read(0, {"AAPL"})
    everything = hub.read(0, None)
    assert mine is not None and mine.last_ts == 3000
    assert everything is not None and everything.last_ts == 4000


def test_snapshot_is_the_newest_event_per_symbol_at_the_hubs_head() -> None:
    hub = Hub()
    assert hub.snapshot(["BTC-USD"]) is None  # not started: the stream asks the log
    btc, aapl = Event(3, "BTC-USD", "1.5", 30), Event(5, "AAPL", "230", 50)
    hub.restart(5, [btc, aapl])
    assert hub.snapshot(["BTC-USD", "AAPL", "MSFT"]) == (5, [btc, aapl])

    newer = {"BTC-USD": Event(6, "BTC-USD", "1.6", 60), "AAPL": Event(7, "AAPL", "231", 70)}
    hub.publish([item(6), item(7, "AAPL")], newer)
    assert hub.snapshot(["AAPL", "BTC-USD"]) == (7, [newer["AAPL"], newer["BTC-USD"]])
    # Retention deleted through id 6: BTC-USD has no tick left in the log.
    hub.pruned_through = 6
    assert hub.snapshot(["AAPL", "BTC-USD"]) == (7, [newer["AAPL"]])


def test_a_warm_restart_holds_the_window_it_is_given() -> None:
    hub = Hub(capacity=100)
    hub.publish([item(1), item(2)])
    latest = [Event(9, "AAPL", "1", 9000)]
    hub.restart(6, latest, window=[item(7), item(8, "MSFT"), item(9, "AAPL")])
    assert (hub.floor, hub.head, hub.valid_upto) == (6, 9, 9)
    assert hub.read(5, None) is None  # below the window: the log answers
    batch = hub.read(6, {"AAPL", "MSFT"})
    assert batch is not None and (batch.cursor, batch.last_id) == (9, 9)
    assert batch.messages == [item(8, "MSFT")[3], item(9, "AAPL")[3]]
    assert hub.snapshot(["AAPL"]) == (9, latest)
