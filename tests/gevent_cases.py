"""Broadcaster and socket cases, each run under gevent in a process of its own.

``python -m tests.gevent_cases NAME DB_PATH`` patches the process first, as
gunicorn's gevent worker does, then runs one case against real parts: a SQLite
log, the follower, the hub, the slots, a broadcaster, and a socketpair whose
one end is the client.  No gunicorn.  ``tests/test_broadcast.py`` runs them.
"""

from gevent import monkey

monkey.patch_all()

import _socket  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gevent  # noqa: E402

from ticker import log  # noqa: E402
from ticker.db import Base, make_engine  # noqa: E402
from ticker.events import Tick, now_us  # noqa: E402
from ticker.follower import Follower  # noqa: E402
from ticker.hub import PULSES_PER_HEARTBEAT, Hub  # noqa: E402
from ticker.stream import (  # noqa: E402
    Broadcaster,
    ClientSocket,
    Slot,
    Streams,
    Subscription,
    broadcast,
    write_timeout,
)

SYMBOLS = ("BTC-USD", "ETH-USD")
PREAMBLE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def eventually(check: Callable[[], object], what: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what}")
        gevent.sleep(0.01)


@dataclass
class World:
    """The real parts of one process's stream path, on a fresh SQLite log."""

    engine: object
    hub: Hub
    streams: Streams
    follower: Follower
    broadcaster: Broadcaster

    def append(self, symbol: str, count: int = 1) -> list[int]:
        ticks = [Tick(symbol, f"{100 + i}.5", now_us()) for i in range(count)]
        ids = log.append(self.engine, ticks)  # type: ignore[arg-type]
        self.follower.wake()
        return ids

    def log_ids(self, symbol: str, after: int) -> list[int]:
        with self.engine.connect() as conn:  # type: ignore[attr-defined]
            return [e.id for e in log.read_after(conn, after, [symbol], 100_000)]


def world(path: str, heartbeat: float = 5.0, slots: int = 10) -> World:
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    hub = Hub(1000)
    streams = Streams(slots)
    follower = Follower(
        engine,
        hub,
        0.01,
        symbols=SYMBOLS,
        pulse_interval=heartbeat / PULSES_PER_HEARTBEAT,
        on_pulse=lambda: streams.on_pulse(write_timeout(heartbeat)),
    )
    follower.start()
    broadcaster = Broadcaster(engine, hub, streams, heartbeat)  # type: ignore[arg-type]
    broadcaster.start()
    return World(engine, hub, streams, follower, broadcaster)


class Reader:
    """The client's end: a chunked HTTP/1.1 body read strictly, split into SSE frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = b""
        self.body = b""
        self.ended = False  # the last chunk (size 0) arrived
        self.frames: list[str] = []

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.raw += data
        return bool(data)

    def read_preamble(self) -> None:
        while b"\r\n\r\n" not in self.raw:
            assert self._fill(), "closed before the headers"
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        assert head + b"\r\n\r\n" == PREAMBLE, head

    def _chunks(self) -> None:
        while not self.ended and b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            assert rest[size : size + 2] == b"\r\n", "a chunk must end in CRLF"
            if size == 0:
                self.ended = True
            self.body += rest[:size]
            self.raw = rest[size + 2 :]
        while b"\n\n" in self.body:
            frame, self.body = self.body.split(b"\n\n", 1)
            self.frames.append(frame.decode())

    def until(self, done: Callable[[list[str]], bool]) -> list[str]:
        """Read until ``done(frames)``; return every frame read so far."""
        self._chunks()
        while not done(self.frames):
            assert not self.ended, f"the body ended: {self.frames[-3:]}"
            assert self._fill(), f"the connection closed: {self.frames[-3:]}"
            self._chunks()
        return self.frames

    def to_the_end(self) -> None:
        """Read until the last chunk, then check the connection closes."""
        self.until(lambda frames: self.ended)
        assert not self.raw and not self.sock.recv(1), "nothing may follow the last chunk"


def tick_ids(frames: list[str]) -> list[int]:
    return [int(f.split("\n")[0][4:]) for f in frames if "\nevent: tick\n" in f]


def connect(
    w: World, symbols: tuple[str, ...], last_id: int | None = None, small: bool = False
) -> tuple[Reader, Slot]:
    """Open a stream on a socketpair, served by the broadcaster like a taken-over request."""
    ours, theirs = socket.socketpair()
    raw = _socket.socket(fileno=os.dup(ours.fileno()))
    ours.close()
    raw.setblocking(False)
    if small:  # a slow reader's buffers fill after a few kilobytes
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.settimeout(15)
    slot = w.streams.acquire("test")
    assert slot is not None
    asked = Subscription(symbols, last_id, 1000)
    gevent.spawn(w.broadcaster.open, ClientSocket(raw, chunked=True), PREAMBLE, asked, slot)
    reader = Reader(theirs)
    reader.read_preamble()
    return reader, slot


def snapshot_head(frames: list[str]) -> int:
    first = next(f for f in frames if "\nevent: snapshot\n" in f)
    return int(first.split("\n")[0][4:])


def has_snapshot(frames: list[str]) -> bool:
    return any("\nevent: snapshot\n" in f for f in frames)


def case_a_parked_stream_gets_every_publish_once(path: str) -> None:
    w = world(path)
    w.append("BTC-USD", 3)
    reader, _ = connect(w, ("BTC-USD",))
    head = snapshot_head(reader.until(has_snapshot))
    eventually(lambda: w.broadcaster.parked == 1, "the stream parked")
    for _ in range(20):
        w.append("BTC-USD", 5)
        w.append("ETH-USD", 5)  # another symbol's ticks: never sent to this stream
    want = w.log_ids("BTC-USD", head)
    got = tick_ids(reader.until(lambda frames: len(tick_ids(frames)) >= len(want)))
    assert got == want, (got, want)
    assert w.broadcaster.parked == 1, "served whole, it stays parked"
    assert w.streams.sent == len(want)


def case_streams_with_their_own_watchlists_each_get_exactly_their_symbols(path: str) -> None:
    own_watchlists(world(path, slots=60))


def case_rounds_that_pause_after_every_group_still_send_each_event_once(path: str) -> None:
    broadcast.ROUND_SLICE = 0.0  # streams open, park and get handed back mid-round
    own_watchlists(world(path, slots=60))


def own_watchlists(w: World) -> None:
    """40 streams, each its own random watchlist, opened while ticks are published."""
    symbols = [f"S{n}" for n in range(8)]
    pick = random.Random(15)
    publishing = True

    def publish() -> None:  # streams open and park while the broadcaster is behind the head
        while publishing:
            w.append(pick.choice(symbols), pick.randint(1, 3))
            gevent.sleep(0.002)

    publisher = gevent.spawn(publish)
    opened = []
    for _ in range(40):
        watchlist = tuple(pick.sample(symbols, pick.randint(1, 4)))
        reader, _ = connect(w, watchlist)
        opened.append((watchlist, reader, snapshot_head(reader.until(has_snapshot))))
    eventually(lambda: w.broadcaster.parked == 40, "every stream parked")
    gevent.sleep(0.2)
    publishing = False
    publisher.join()
    for symbol in symbols:  # one last tick each: every stream has something to wait for
        w.append(symbol)
    for watchlist, reader, head in opened:
        want = sorted(i for s in watchlist for i in w.log_ids(s, head))
        owed = len(want)
        got = tick_ids(reader.until(lambda frames, owed=owed: len(tick_ids(frames)) >= owed))
        assert got == want, (watchlist, head, got, want)
    assert w.broadcaster.parked == 40, "served whole, each stays parked"


def case_a_partial_write_is_handed_back_and_parked_again(path: str) -> None:
    w = world(path)
    reader, _ = connect(w, ("BTC-USD",), small=True)
    head = snapshot_head(reader.until(has_snapshot))
    eventually(lambda: w.broadcaster.parked == 1, "the stream parked")
    for _ in range(30):  # the client reads nothing meanwhile: its buffers fill
        w.append("BTC-USD", 20)
    eventually(lambda: w.broadcaster.parked == 0, "the stream handed back")
    want = w.log_ids("BTC-USD", head)
    got = tick_ids(reader.until(lambda frames: len(tick_ids(frames)) >= len(want)))
    assert got == want, "the unsent rest, then the hub: no byte lost or sent twice"
    eventually(lambda: w.broadcaster.parked == 1, "parked again once caught up")


def case_a_gone_client_frees_its_slot(path: str) -> None:
    w = world(path)
    reader, slot = connect(w, ("BTC-USD",))
    reader.until(has_snapshot)
    eventually(lambda: w.broadcaster.parked == 1, "the stream parked")
    reader.sock.close()
    w.append("BTC-USD")
    eventually(lambda: w.streams.open == 0, "the slot given back")
    assert slot.ended == "client gone", slot.ended
    assert w.broadcaster.parked == 0


def case_a_quiet_stream_gets_keepalives_that_move_its_resume_point(path: str) -> None:
    w = world(path, heartbeat=0.4)
    reader, _ = connect(w, ("BTC-USD",))
    reader.until(has_snapshot)
    eventually(lambda: w.broadcaster.parked == 1, "the stream parked")
    started = time.monotonic()
    reader.until(lambda frames: frames[-1] == ": keepalive")
    assert time.monotonic() - started < 0.4 + 0.2, "a keepalive at least every heartbeat"
    last = w.append("ETH-USD", 3)[-1]  # only other symbols' ticks pass
    frames = reader.until(lambda frames: frames[-1] == f": keepalive\nid: {last}")
    assert not tick_ids(frames)


def case_shutdown_ends_every_stream_with_the_notice_and_the_last_chunk(path: str) -> None:
    w = world(path)
    first, first_slot = connect(w, ("BTC-USD",))
    second, second_slot = connect(w, ("ETH-USD",))
    first.until(has_snapshot)
    second.until(has_snapshot)
    eventually(lambda: w.broadcaster.parked == 2, "both streams parked")
    started = time.monotonic()
    w.hub.close()  # what the shutdown does, in this order (lifecycle.end_streams)
    w.broadcaster.close()
    for reader in (first, second):
        reader.to_the_end()
        assert reader.frames[-1] == ": shutdown, reconnect", reader.frames[-1]
    assert time.monotonic() - started < 1.0
    assert (first_slot.ended, second_slot.ended) == ("shutdown", "shutdown")
    assert w.streams.open == 0


def case_a_client_that_stops_reading_is_cut_off_by_the_sweep(path: str) -> None:
    w = world(path, heartbeat=0.4)  # writes may block for write_timeout(0.4) = 2 s
    reader, slot = connect(w, ("BTC-USD",), small=True)
    reader.until(has_snapshot)
    eventually(lambda: w.broadcaster.parked == 1, "the stream parked")
    started = time.monotonic()
    for _ in range(30):
        w.append("BTC-USD", 20)
    eventually(lambda: w.streams.open == 0, "the stalled client cut off", timeout=10)
    took = time.monotonic() - started
    assert slot.ended == "stalled", slot.ended
    assert 2.0 <= took < 2.0 + 1.0, f"cut off after {took:.2f}s, not the write timeout"
    assert not w.streams.writers, "no write left to sweep"


def case_send_writes_everything_through_a_full_buffer(path: str) -> None:
    ours, theirs = socket.socketpair()
    raw = _socket.socket(fileno=os.dup(ours.fileno()))
    ours.close()
    raw.setblocking(False)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client = ClientSocket(raw, chunked=False)
    data = bytes(range(256)) * 4096  # 1 MiB: many times what the buffers hold
    slot = Streams(1).acquire("test")
    assert slot is not None
    writer = slot.watch(lambda: None)
    blocked: list[float | None] = []
    sender = gevent.spawn(client.send, data, writer)
    gevent.sleep(0.05)
    blocked.append(writer.since)  # the write waits for the reader, and says since when
    got = b""
    while len(got) < len(data):
        got += theirs.recv(65536)
    sender.get(timeout=5)
    assert got == data
    assert blocked[0] is not None and writer.since is None


CASES = {name[5:]: case for name, case in list(globals().items()) if name.startswith("case_")}

if __name__ == "__main__":
    CASES[sys.argv[1]](sys.argv[2])
