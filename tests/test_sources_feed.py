"""The feed machinery (ticker.sources.feed) against a scripted venue in this process.

The venue is a list of connections; each connection a queue of steps the
test pushes: a batch of raw trades, ``DROP`` (the connection breaks).  A raw
trade is ``(symbol, id, price)``; ``"junk"`` is malformed.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.fakes import eventually
from ticker.events import Tick
from ticker.sources.feed import FeedSource, backoff_delay
from ticker.sources.marks import Mark
from ticker.sources.upstream import Trade, Upstream

DROP = "drop"


class Venue:
    """What the scripted upstreams of one test share: the steps, and what they were asked."""

    def __init__(self, ordered: bool = True, sequential: bool = False) -> None:
        self.ordered = ordered
        self.sequential = sequential
        self.steps: queue.Queue[Any] = queue.Queue()
        self.history: dict[str, list[tuple[str, int, str]]] = {}  # what REST still has
        self.connects = 0
        self.closes = 0
        self.fills: list[tuple[str, int, int]] = []

    def send(self, *trades: Any) -> None:
        for raw in trades:
            if isinstance(raw, tuple):
                self.history.setdefault(raw[0], []).append(raw)
        self.steps.put(list(trades))


class Scripted(Upstream):
    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.ordered = venue.ordered
        self.sequential = venue.sequential

    async def connect(self) -> None:
        self.venue.connects += 1

    async def receive(self) -> Sequence[Any]:
        while True:
            try:
                step = self.venue.steps.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.005)
                continue
            if step == DROP:
                raise ConnectionError("dropped by the venue")
            return list(step)

    def parse(self, raw: Any) -> Trade:
        symbol, trade_id, price = raw
        return Trade(symbol, price, "1.5", 1_700_000_000_000_000 + trade_id, str(trade_id))

    async def fill(self, symbol: str, after_id: int, limit: int) -> Sequence[Any]:
        self.venue.fills.append((symbol, after_id, limit))
        return [t for t in self.venue.history.get(symbol, []) if t[1] > after_id][:limit]

    async def close(self) -> None:
        self.venue.closes += 1


class ScriptedFeed(FeedSource):
    def __init__(self, venue: Venue, **options: Any) -> None:
        super().__init__("scripted", **{"silence": 5.0, "backoff": 0.05, **options})
        self.venue = venue

    def upstream(self) -> Upstream:
        return Scripted(self.venue)


@pytest.fixture
def venue() -> Venue:
    return Venue()


@pytest.fixture
def feeds() -> Iterator[list[FeedSource]]:
    made: list[FeedSource] = []
    yield made
    for feed in made:
        feed.close()


def started(venue: Venue, feeds: list[FeedSource], **options: Any) -> ScriptedFeed:
    feed = ScriptedFeed(venue, **options)
    feeds.append(feed)
    feed.resume([])
    eventually(lambda: feed.health.connected, "the feed connected")
    return feed


def collect(feed: FeedSource, count: int) -> list[Tick]:
    """Drain the feed until ``count`` ticks came, then once more to see nothing extra."""
    got: list[Tick] = []

    def enough() -> bool:
        got.extend(feed.next_ticks(0))
        return len(got) >= count

    eventually(enough, f"{count} ticks")
    got.extend(feed.next_ticks(0))
    return got


def ids(ticks: list[Tick]) -> list[int]:
    return [t.ts - 1_700_000_000_000_000 for t in ticks]


def test_trades_arrive_in_order_with_their_exact_strings(
    venue: Venue, feeds: list[FeedSource]
) -> None:
    feed = started(venue, feeds)
    venue.send(("BTC-USD", 2, "67012.35000000"), ("BTC-USD", 1, "0.00001234"))
    eventually(lambda: feed.health.trades == 2, "both trades received")
    ticks = feed.next_ticks(0)
    assert [(t.symbol, t.price, t.size) for t in ticks] == [
        ("BTC-USD", "0.00001234", "1.5"),
        ("BTC-USD", "67012.35000000", "1.5"),
    ]
    assert Mark.load(feed.checkpoint()["BTC-USD"]).trade_id == "2"
    assert feed.health.trades == 2 and feed.health.last_message_at is not None


def test_a_replay_after_a_reconnect_is_not_taken_twice(
    venue: Venue, feeds: list[FeedSource]
) -> None:
    feed = started(venue, feeds)
    venue.send(*[("BTC-USD", i, "1") for i in (1, 2, 3)])
    venue.steps.put(DROP)
    venue.send(*[("BTC-USD", i, "1") for i in (2, 3, 4)])
    assert ids(collect(feed, 4)) == [1, 2, 3, 4]
    assert feed.health.duplicates == 2
    assert feed.health.reconnects == 1 and venue.connects == 2 and venue.closes == 1


def test_without_rising_ids_a_replay_is_known_by_time_and_id(feeds: list[FeedSource]) -> None:
    venue = Venue(ordered=False)
    feed = started(venue, feeds)
    venue.send(("ETH-USD", 5, "1"), ("ETH-USD", 7, "1"))
    venue.send(("ETH-USD", 5, "1"), ("ETH-USD", 7, "1"), ("ETH-USD", 9, "1"))
    assert ids(collect(feed, 3)) == [5, 7, 9]
    assert feed.health.duplicates == 2


def test_a_gap_in_sequential_ids_is_counted_and_filled(feeds: list[FeedSource]) -> None:
    venue = Venue(sequential=True)
    feed = started(venue, feeds)
    venue.send(("BTC-USD", 1, "1"), ("BTC-USD", 2, "1"))
    assert ids(collect(feed, 2)) == [1, 2]
    venue.history["BTC-USD"] += [("BTC-USD", 3, "1"), ("BTC-USD", 4, "1")]  # missed on the wire
    venue.send(("BTC-USD", 5, "1"))
    assert ids(collect(feed, 3)) == [3, 4, 5]
    assert feed.health.gaps == 1
    assert venue.fills == [("BTC-USD", 2, 2)]


def test_a_silent_feed_is_reconnected(venue: Venue, feeds: list[FeedSource]) -> None:
    feed = started(venue, feeds, silence=0.2)
    eventually(lambda: feed.health.reconnects >= 1 and venue.connects >= 2, "a reconnect")
    venue.send(("BTC-USD", 1, "1"))
    assert ids(collect(feed, 1)) == [1]


def test_malformed_trades_are_counted_and_skipped(venue: Venue, feeds: list[FeedSource]) -> None:
    feed = started(venue, feeds)
    venue.send(("BTC-USD", 1, "1"), "junk", ("BTC-USD", 2, "1"))
    assert ids(collect(feed, 2)) == [1, 2]
    assert feed.health.malformed == 1 and feed.health.reconnects == 0


def test_restored_cursors_skip_what_the_log_has(venue: Venue, feeds: list[FeedSource]) -> None:
    feed = ScriptedFeed(venue)
    feeds.append(feed)
    feed.restore({"BTC-USD": Mark("3", 1_700_000_000_000_003, {"3"}).dump()})
    feed.resume([])
    venue.send(*[("BTC-USD", i, "1") for i in (2, 3, 4)])
    assert ids(collect(feed, 1)) == [4]


def test_pause_closes_the_connection_and_forgets_the_buffer(
    venue: Venue, feeds: list[FeedSource]
) -> None:
    feed = started(venue, feeds)
    venue.send(("BTC-USD", 1, "1"))
    eventually(lambda: feed.health.trades == 1, "the trade received")
    feed.pause()
    assert venue.closes == 1 and not feed.health.connected
    assert feed.next_ticks(0) == []


def test_a_full_buffer_drops_and_counts(venue: Venue, feeds: list[FeedSource]) -> None:
    feed = started(venue, feeds, capacity=2)
    venue.send(*[("BTC-USD", i, "1") for i in (1, 2, 3)])
    eventually(lambda: feed.health.dropped == 1, "one trade dropped")
    assert ids(feed.next_ticks(0)) == [1, 2]


def test_the_back_off_is_jittered_and_bounded() -> None:
    delays = [backoff_delay(attempt, 30.0) for attempt in range(40) for _ in range(5)]
    assert all(0.25 <= d <= 30.0 for d in delays)
    assert len(set(delays)) > 150  # jittered
    assert max(backoff_delay(2, 30.0) for _ in range(200)) <= 2.0
