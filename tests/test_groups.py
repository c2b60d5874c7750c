"""The symbol index of parked streams: the indexed routing equals the brute-force filter.

Pure: a real hub and ``Groups``, and streams that only record what they are
given.  A round here does what ``Broadcaster._deliver`` does, without sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ticker.hub import Hub, Stretch
from ticker.stream.groups import Group, Groups

ALPHABET = ("A", "B", "C", "D", "E", "F")
watchlists = st.frozensets(st.sampled_from(ALPHABET), min_size=1, max_size=4)


class Stream:
    """A parked stream's stand-in: its symbols, cursor and every id it was sent."""

    def __init__(self, wanted: frozenset[str], cursor: int) -> None:
        self.wanted = wanted
        self.cursor = cursor
        self.start = cursor  # it is owed every event of its symbols after this id
        self.got: list[int] = []


def routed(groups: Groups[Stream], stretch: Stretch) -> dict[Group[Stream], list[bytes]]:
    """Return each routed group's messages of ``stretch``, in the order routed."""
    return {
        group: [stretch.messages[i] for i in ([hits] if isinstance(hits, int) else hits)]
        for group, hits in groups.route(stretch).items()
    }


class World:
    """A hub, the log it holds a window of, the index, and the streams."""

    def __init__(self, capacity: int, limit: int) -> None:
        self.hub = Hub(capacity)
        self.hub.restart(0)
        self.log: list[tuple[int, str]] = []
        self.groups: Groups[Stream] = Groups(0)
        self.streams: list[Stream] = []
        self.limit = limit

    def publish(self, symbols: list[str], gap: int) -> None:
        next_id = self.hub.head + 1 + gap
        items = []
        for i, symbol in enumerate(symbols):
            items.append((next_id + i, symbol, next_id + i, f"{next_id + i}\n".encode()))
            self.log.append((next_id + i, symbol))
        self.hub.publish(items)

    def owed(self, stream: Stream, upto: int) -> list[int]:
        return [i for i, s in self.log if s in stream.wanted and stream.start < i <= upto]

    def alone(self, stream: Stream) -> None:
        """Serve a handed-back stream on its own up to the hub's head, then park it again."""
        while stream.cursor < self.hub.head:
            batch = self.hub.read(stream.cursor, stream.wanted, self.limit)
            if batch is None:  # below the hub's floor: the log
                upto = self.hub.head
                stream.got += [
                    i for i, s in self.log if s in stream.wanted and stream.cursor < i <= upto
                ]
                stream.cursor = upto
                continue
            stream.got += [int(m) for m in batch.messages]
            stream.cursor = batch.cursor
        self.groups.park(stream, chunked=len(stream.wanted) % 2 == 0)

    def open(self, wanted: frozenset[str], back: int) -> None:
        stream = Stream(wanted, max(0, self.hub.head - back))
        self.streams.append(stream)
        self.alone(stream)

    def hand_back(self, stream: Stream) -> None:
        """Take a stream out, as a partial write or a restart does: its true cursor comes back."""
        true = self.true_cursor(stream)
        if self.groups.remove(stream):
            assert stream.cursor == true, "the cursor written back is where it stands"
            self.alone(stream)

    def round(self, meanwhile: Sequence[frozenset[str]] = (), publish: Sequence[str] = ()) -> None:
        """One broadcast round, as ``Broadcaster._deliver`` makes it.

        ``meanwhile``: streams that open while the round pauses after its first
        group, once ``publish`` has been published (other greenlets run then).
        """
        groups = self.groups
        for stream in groups.admit():
            self.alone(stream)
        stretch = self.hub.stretch(groups.position, self.limit, groups.next_stop())
        if stretch is None:
            for stream in groups.members():
                self.hand_back(stream)
            groups.position = self.hub.head
            return
        groups.routing = True
        paused = False
        for group, messages in routed(groups, stretch).items():
            for stream in list(group.members):
                stream.cursor = stretch.cursor
                stream.got += [int(m) for m in messages]
            if not paused:
                paused = True
                self.publish(list(publish), 0)
                for wanted in meanwhile:
                    self.open(wanted, 0)
        groups.routing = False
        groups.position = stretch.cursor

    def true_cursor(self, stream: Stream) -> int:
        if stream in self.groups.joining:
            return stream.cursor
        return max(stream.cursor, self.groups.position)


@settings(max_examples=300, deadline=None)
@given(
    wanted=st.lists(watchlists, min_size=1, max_size=12),
    events=st.lists(st.sampled_from(ALPHABET), max_size=60),
    position=st.integers(0, 70),
    limit=st.integers(1, 80),
)
def test_route_gives_each_group_exactly_its_symbols_after_position(
    wanted: list[frozenset[str]], events: list[str], position: int, limit: int
) -> None:
    hub = Hub(1000)
    hub.restart(0)
    hub.publish([(i + 1, s, 1000 + i, f"{i + 1}\n".encode()) for i, s in enumerate(events)])
    groups: Groups[Stream] = Groups(position)
    streams = [Stream(w, position) for w in wanted]
    for stream in streams:
        groups.park(stream, chunked=False)
    stretch = hub.stretch(position, limit)
    assert stretch is not None
    by_wanted = {group.wanted: (group, got) for group, got in routed(groups, stretch).items()}
    assert len(by_wanted) == len(groups.route(stretch)), "one delivery per group"
    for stream in streams:
        brute = [
            i + 1
            for i, s in enumerate(events)
            if s in stream.wanted and position < i + 1 <= stretch.cursor
        ]
        group, messages = by_wanted.get(stream.wanted, (None, []))
        assert [int(m) for m in messages] == brute
        if group is not None:
            assert stream in group.members
    cut = len(events) - position > limit  # more than one stretch's worth after position
    assert stretch.cursor == (position + limit if cut else max(position, len(events)))


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("publish"), st.lists(st.sampled_from(ALPHABET), max_size=12), st.integers(0, 3)
        ),
        st.tuples(st.just("open"), watchlists, st.integers(0, 40)),
        st.tuples(st.just("round")),
        st.tuples(
            st.just("round, paused"),
            st.lists(watchlists, max_size=3),
            st.lists(st.sampled_from(ALPHABET), max_size=4),
        ),
        st.tuples(st.just("hand back"), st.integers(0, 50)),
        st.tuples(st.just("keepalive"), st.integers(0, 50)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, capacity=st.integers(8, 200), limit=st.integers(1, 30))
def test_every_parked_stream_gets_exactly_its_events_after_its_cursor_in_order(
    ops: list[tuple[Any, ...]], capacity: int, limit: int
) -> None:
    w = World(capacity, limit)
    for op in ops:
        if op[0] == "publish":
            w.publish(op[1], op[2])
        elif op[0] == "open":
            w.open(op[1], op[2])
        elif op[0] == "round":
            w.round()
        elif op[0] == "round, paused":
            w.round(op[1], op[2])
        elif w.streams:
            stream = w.streams[op[1] % len(w.streams)]
            if op[0] == "hand back":
                w.hand_back(stream)
            else:  # a keepalive names the true cursor, as the broadcaster's does
                true = w.true_cursor(stream)
                w.groups.settle(stream)
                assert stream.cursor == true
        for stream in w.streams:  # the implicit cursor is always a true one
            assert stream.got == w.owed(stream, w.true_cursor(stream))
    for _ in range(10_000):  # the broadcaster's rounds until it has reached the head
        if w.groups.position >= w.hub.head and not w.groups.joining:
            break
        w.round()
    assert w.groups.position == w.hub.head and not w.groups.joining
    assert len(w.groups) == len(w.streams), "every stream still parked"
    for stream in w.streams:
        assert stream.got == w.owed(stream, w.hub.head), "each of its events once, in id order"
        w.groups.settle(stream)
        assert stream.cursor == w.hub.head


def test_a_stream_parked_ahead_of_the_broadcaster_joins_when_the_round_reaches_it() -> None:
    w = World(1000, 1000)
    w.open(frozenset({"A"}), 0)
    w.publish(["A", "B", "A"], 0)  # ids 1..3; the broadcaster has not read them yet
    late = Stream(frozenset({"A", "B"}), 0)
    w.streams.append(late)
    w.alone(late)  # caught up to 3 on its own: it parks at 3, ahead of position 0
    assert late in w.groups.joining
    w.publish(["B", "A"], 0)  # ids 4, 5
    w.round()
    assert w.groups.position == 3, "no stretch reads past a joining cursor"
    w.round()
    assert late not in w.groups.joining and w.groups.position == 5
    assert late.got == [1, 2, 3, 4, 5]
    assert w.streams[0].got == [1, 3, 5]


def test_an_emptied_group_leaves_the_index() -> None:
    groups: Groups[Stream] = Groups(0)
    first, second = Stream(frozenset({"A", "B"}), 0), Stream(frozenset({"A", "B"}), 0)
    groups.park(first, chunked=True)
    groups.park(second, chunked=True)
    assert len(groups.groups()) == 1
    groups.remove(first)
    groups.remove(second)
    assert groups.groups() == [] and len(groups) == 0
    hub = Hub(100)
    hub.restart(0)
    hub.publish([(1, "A", 1, b"1\n")])
    stretch = hub.stretch(0)
    assert stretch is not None and groups.route(stretch) == {}
