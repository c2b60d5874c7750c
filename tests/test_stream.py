"""GET /stream over real HTTP against ``ticker serve`` (gunicorn, gevent, 2 workers)."""

from __future__ import annotations

import itertools
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes import QUIET, SYMBOLS, eventually, expired_on_resume, log_ids, tick_ids
from tests.servers import Server, run_ticker
from tests.sse_client import Message, SSEStream

pytestmark = pytest.mark.server


class Writer(threading.Thread):
    """Post small batches of ticks as fast as the server takes them, until stopped."""

    def __init__(self, server: Server, symbols: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.symbols = symbols
        self.random = random.Random(seed)
        self.stopped = threading.Event()
        self.ids: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                batch = [
                    {"symbol": self.random.choice(self.symbols), "price": f"{100 + i}.25"}
                    for i in range(self.random.randint(1, 5))
                ]
                self.ids.extend(self.server.post_ticks(batch))
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stopped.set()
        self.join(30)
        assert self.error is None, self.error


def read_until_id(stream: SSEStream, target: int, deadline: float = 20) -> list[Message]:
    """Read until the client's resume point (last id, keepalives included) reaches ``target``."""
    return stream.ticks_until(lambda f: f.id is not None and int(f.id) >= target, deadline=deadline)


def test_fresh_connect_gets_snapshot_at_head_then_live_ticks(serve: Callable[..., Server]) -> None:
    # One worker: a POST reaches its hub before it is answered.  (With two, a
    # stream opened on the other worker may get its snapshot a poll behind.)
    server = serve(workers=1, **QUIET)
    server.post_ticks(
        [{"symbol": "BTC-USD", "price": "67000.10"}, {"symbol": "AAPL", "price": "230"}]
    )
    head = server.post_ticks([{"symbol": "ETH-USD", "price": "3500.5"}])[0]

    with SSEStream(server.base + "/stream?symbols=btc-usd,eth-usd") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["Cache-Control"] == "no-cache"
        assert stream.headers["X-Accel-Buffering"] == "no"
        frames = stream.frames()
        opening = next(frames)
        assert opening.retry is not None and 1000 <= opening.retry <= 5000
        snapshot = next(frames)
        assert snapshot.event == "snapshot"
        assert snapshot.id == str(head)
        body = snapshot.json()
        assert body["head"] == head
        assert [(t["symbol"], t["price"]) for t in body["ticks"]] == [
            ("BTC-USD", "67000.10"),
            ("ETH-USD", "3500.5"),
        ]

        posted = server.post_ticks(
            [
                {"symbol": "AAPL", "price": "231"},
                {"symbol": "BTC-USD", "price": "0.00001234"},
                {"symbol": "ETH-USD", "price": "3501"},
            ]
        )
        live = [next(frames), next(frames)]
    assert [f.event for f in live] == ["tick", "tick"]
    assert tick_ids(live) == posted[1:]
    assert live[0].json() == {
        "id": posted[1],
        "symbol": "BTC-USD",
        "price": "0.00001234",
        "ts": live[0].json()["ts"],
    }
    assert live[0].json()["ts"].endswith("Z")


# With the default hub the replay comes from the hub; with a hub of 200 events
# it starts in the log and crosses into the hub.
@pytest.mark.parametrize(
    ("how", "hub_capacity"),
    [("header", 20000), ("query", 20000), ("header-wins", 20000), ("header", 200)],
)
def test_replay_then_live_matches_the_log_under_concurrent_writes(
    serve: Callable[..., Server], how: str, hub_capacity: int
) -> None:
    server = serve(heartbeat=0.5, hub_capacity=hub_capacity, **QUIET)
    chosen = ["BTC-USD", "AAPL"]
    before: list[int] = []
    for n in range(6):  # a replay of some 300 kB, far more than a paused client's buffers
        batch = [{"symbol": SYMBOLS[i % 3], "price": f"{n + 1}.{i}"} for i in range(1000)]
        before += server.post_ticks(batch)
    resume = before[1234]
    headers, query = {}, ""
    if how in ("header", "header-wins"):
        headers["Last-Event-ID"] = str(resume)
    if how in ("query", "header-wins"):
        query = f"&last_event_id={resume if how == 'query' else before[10]}"
    writers = [Writer(server, SYMBOLS, seed) for seed in range(3)]
    for writer in writers:
        writer.start()
    try:
        eventually(lambda: sum(len(w.ids) for w in writers) >= 30, "the writers posting")
        url = f"{server.base}/stream?symbols=BTC-USD,aapl{query}"
        with SSEStream(url, headers, receive_buffer=4096) as stream:
            frames = stream.frames()
            got = [next(frames), next(frames)]  # the retry, then the replay: the head is read
            opened_at = log_ids(server.db_url)[-1]  # what is above it came after the opening
            # The client pauses; its small buffer holds the replay up while writes land.
            eventually(
                lambda: len(log_ids(server.db_url, after=opened_at)) >= 50,
                "writes committed while the stream replays",
            )
            got += stream.ticks_until(lambda f: f.event == "live")
            live_at = len(got) - 1
            counted = itertools.count(1)
            got += stream.ticks_until(lambda f: f.event == "tick" and next(counted) == 20)
            for writer in writers:
                writer.finish()
            final = log_ids(server.db_url)[-1]
            got += read_until_id(stream, final)
    finally:
        for writer in writers:
            writer.stopped.set()

    marker = got[live_at].json()
    replayed, live = tick_ids(got[:live_at]), tick_ids(got[live_at + 1 :])
    assert got[live_at].id is None
    assert marker["replayed"] == len(replayed)
    assert replayed and replayed[-1] <= marker["head"]
    assert tick_ids(got) == log_ids(server.db_url, chosen, after=resume)  # no gap, none twice
    # Writes landed during the hand-over: the replay served ticks committed after the
    # stream opened, the marker came after them, and live ticks followed the marker.
    assert marker["head"] > opened_at
    assert [i for i in replayed if i > opened_at]
    assert len(live) >= 20 and live[0] > marker["head"]


def test_client_killed_and_reconnected_repeatedly_loses_nothing(
    serve: Callable[..., Server],
) -> None:
    server = serve(heartbeat=0.5, **QUIET)
    start = server.post_ticks([{"symbol": "ETH-USD", "price": "1"}])[0]
    writer = Writer(server, SYMBOLS, seed=7)
    writer.start()
    received: list[int] = []
    last_id = str(start)
    rng = random.Random(3)
    try:
        for _ in range(25):
            with SSEStream(
                server.base + "/stream?symbols=ETH-USD,AAPL", {"Last-Event-ID": last_id}
            ) as stream:
                for n, frame in enumerate(stream.frames()):
                    if frame.event == "tick":
                        received.append(int(frame.id or 0))
                    if n >= rng.randint(1, 40):
                        break
                last_id = stream.last_event_id or last_id
    finally:
        writer.finish()
    final = log_ids(server.db_url)[-1]
    deadline = time.monotonic() + 30
    while int(last_id) < final:  # like a browser: should the server end the stream, resume
        assert time.monotonic() < deadline, f"stuck at {last_id}, wanted {final}"
        with SSEStream(
            server.base + "/stream?symbols=ETH-USD,AAPL", {"Last-Event-ID": last_id}
        ) as stream:
            for frame in stream.frames():
                if frame.event == "tick":
                    received.append(int(frame.id or 0))
                if frame.id is not None and int(frame.id) >= final:
                    break
            last_id = stream.last_event_id or last_id
    assert received == log_ids(server.db_url, ["ETH-USD", "AAPL"], after=start)
    assert len(received) > 50


def test_reset_when_last_id_is_ahead_of_the_head(serve: Callable[..., Server]) -> None:
    server = serve(**QUIET)
    head = server.post_ticks([{"symbol": "AAPL", "price": "230.5"}])[0]
    with SSEStream(server.base + "/stream?symbols=AAPL", {"Last-Event-ID": str(head + 500)}) as s:
        frames = s.frames()
        next(frames)
        reset = next(frames)
        assert reset.event == "reset" and reset.id == str(head)
        assert reset.json() == {
            "reason": "ahead",
            "head": head,
            "ticks": [reset.json()["ticks"][0]],
        }
        assert reset.json()["ticks"][0]["price"] == "230.5"
        later = server.post_ticks([{"symbol": "AAPL", "price": "231"}])
        assert tick_ids([next(frames)]) == later


def test_reset_when_last_id_was_pruned(serve: Callable[..., Server], tmp_path: Any) -> None:
    server = serve(**QUIET)
    ids = server.post_ticks([{"symbol": "BTC-USD", "price": f"{i + 1}"} for i in range(50)])
    done = run_ticker("prune", database_url=server.db_url, retention="10")
    assert done.returncode == 0, done.stderr
    assert "pruned 40 events" in done.stdout

    # Each worker's hub learns of the prune at its follower's next read.
    got = eventually(
        lambda: expired_on_resume(server.base, ids[5]), "every hub knows the prune horizon"
    )
    reset = got[1]  # the frame after the retry
    assert reset.event == "reset"
    assert reset.json()["reason"] == "expired"
    assert reset.id == str(ids[-1]) and reset.json()["head"] == ids[-1]
    assert [t["price"] for t in reset.json()["ticks"]] == ["50"]

    # A resume point that is still kept replays normally.
    with SSEStream(server.base + "/stream", {"Last-Event-ID": str(ids[45])}) as s:
        frames = s.ticks_until(lambda f: f.event == "live")
    assert tick_ids(frames) == ids[46:]


def test_keepalive_moves_a_filtered_clients_resume_point(serve: Callable[..., Server]) -> None:
    server = serve(heartbeat=0.5, **QUIET)
    with SSEStream(server.base + "/stream?symbols=ETH-USD") as stream:
        frames = stream.frames()
        next(frames)
        head = int(next(frames).id or -1)
        idle = next(frames)  # nothing has passed: a bare keepalive
        assert idle.comments == ["keepalive"] and idle.id is None and idle.event is None
        passed = server.post_ticks([{"symbol": "BTC-USD", "price": "1"} for _ in range(3)])
        moved = next(frames)
    assert passed[0] > head
    assert moved.comments == ["keepalive"] and moved.event is None and moved.data is None
    assert moved.id == str(passed[-1])
    assert stream.last_event_id == str(passed[-1])


def test_retry_delay_is_jittered_per_connection(serve: Callable[..., Server]) -> None:
    server = serve(**QUIET)
    delays = set()
    for _ in range(8):
        with SSEStream(server.base + "/stream") as stream:
            delays.add(next(stream.frames()).retry)
    assert len(delays) > 1
    assert all(d is not None and 1000 <= d <= 5000 for d in delays)


def test_over_the_stream_limit_the_answer_is_busy_then_a_slot_frees(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=1, max_streams=1, heartbeat=0.3, **QUIET)
    first = SSEStream(server.base + "/stream")
    assert next(first.frames()).retry is not None

    with SSEStream(server.base + "/stream") as busy:
        assert busy.status == 200
        assert int(busy.headers["Retry-After"]) >= 20
        frames = list(busy.frames())  # the server closes the stream after the notice
    assert frames[0].retry is not None and frames[0].retry >= 20000
    assert frames[1].event == "busy" and "retry" in frames[1].json()["error"]
    assert len(frames) == 2

    first.close()
    deadline = time.monotonic() + 10
    while True:
        with SSEStream(server.base + "/stream") as again:
            events = [f.event for f, _ in zip(again.frames(), range(2), strict=False)]
        if events[1] == "snapshot":
            break
        assert events[1] == "busy" and time.monotonic() < deadline
        time.sleep(0.2)


def test_closed_clients_free_their_streams(serve: Callable[..., Server]) -> None:
    server = serve(workers=1, heartbeat=0.3, **QUIET)
    streams = [SSEStream(server.base + "/stream") for _ in range(5)]
    for stream in streams:
        next(stream.frames())
    assert server.get("/healthz")["streams"]["open"] == 5
    for stream in streams:
        stream.close()
    eventually(lambda: server.get("/healthz")["streams"]["open"] == 0, "closed streams released")


def test_slow_reader_is_served_from_the_log_without_loss(serve: Callable[..., Server]) -> None:
    server = serve(workers=1, hub_capacity=100, heartbeat=0.5, **QUIET)
    with SSEStream(server.base + "/stream?symbols=BTC-USD,ETH-USD") as stream:
        frames = stream.frames()
        next(frames)
        head = int(next(frames).id or -1)
        for _ in range(40):  # about 5 MB of messages while the client reads nothing
            server.post_ticks(
                [{"symbol": SYMBOLS[i % 3], "price": f"{i}.123456789"} for i in range(1, 1001)]
            )
        final = log_ids(server.db_url)[-1]
        received = tick_ids(read_until_id(stream, final, deadline=60))
    assert received == log_ids(server.db_url, ["BTC-USD", "ETH-USD"], after=head)
    assert server.get("/healthz")["streams"]["fallbacks"] > 0


def test_bad_requests_get_json_errors_and_the_service_stays_healthy(
    serve: Callable[..., Server],
) -> None:
    import json
    import urllib.error
    import urllib.request

    server = serve(max_symbols=2, **QUIET)
    cases = [
        ("/stream?symbols=BTC%20USD", {}, 400, "malformed"),
        ("/stream?symbols=AAPL,BTC-USD,ETH-USD", {}, 400, "too many"),
        ("/stream?symbols=AAPL,NOPE", {}, 404, "NOPE"),
        ("/stream?last_event_id=-3", {}, 400, "last_event_id"),
        ("/stream", {"Last-Event-ID": "x1"}, 400, "Last-Event-ID"),
        ("/stream?last_event_id=9223372036854775808", {}, 400, "2^63"),
    ]
    for path, headers, status, words in cases:
        request = urllib.request.Request(server.base + path, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == status, path
        assert info.value.headers["Content-Type"] == "application/json"
        assert words in json.load(info.value)["error"], path
    assert server.get("/healthz")["status"] == "ok"
    with SSEStream(server.base + "/stream?symbols=AAPL") as stream:
        frames = stream.frames()
        next(frames)
        assert next(frames).event == "snapshot"


def test_a_thousand_idle_streams_hold_no_database_connection(
    serve: Callable[..., Server],
) -> None:
    # The SQLite pool holds 30 connections per worker; if a waiting stream kept
    # one, the streams past the 60th would stall on the pool instead of opening.
    server = serve(workers=2, **QUIET)
    streams = []
    try:
        for _ in range(1000):
            stream = SSEStream(server.base + "/stream?symbols=AAPL")
            frames = stream.frames()
            next(frames)
            assert next(frames).event == "snapshot"
            streams.append((stream, frames))
        posted = server.post_ticks([{"symbol": "AAPL", "price": "231.5"}])
        for _, frames in streams:
            assert tick_ids([next(frames)]) == posted
        assert server.get("/healthz")["status"] == "ok"
    finally:
        for stream, _ in streams:
            stream.close()


def test_a_client_that_stops_reading_is_disconnected_and_frees_its_slot(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=1, heartbeat=0.5, **QUIET)  # writes may block for 2 s
    stalled = SSEStream(server.base + "/stream")
    next(stalled.frames())
    try:
        assert server.get("/healthz")["streams"]["open"] == 1
        for _ in range(40):  # about 5 MB: more than the socket buffers hold
            server.post_ticks([{"symbol": "AAPL", "price": f"{i}.123456789"} for i in range(1000)])
        eventually(
            lambda: server.get("/healthz")["streams"]["open"] == 0, "a stalled client let go", 20
        )
    finally:
        stalled.close()


def _read_until(sock: socket.socket, marker: bytes, got: bytes = b"") -> bytes:
    deadline = time.monotonic() + 10
    while marker not in got:
        assert time.monotonic() < deadline, f"no {marker!r} in {got[-300:]!r}"
        data = sock.recv(65536)
        assert data, f"the server closed before {marker!r}"
        got += data
    return got


def _unchunk(body: bytes) -> bytes:
    plain = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        plain, body = plain + rest[:n], rest[n + 2 :]
        assert rest[n : n + 2] in (b"\r\n", b""), "a chunk did not end where its size said"
    return plain


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_stream_owns_its_connection_chunked_only_for_http11(
    serve: Callable[..., Server], version: str
) -> None:
    server = serve(workers=1, **QUIET)
    head = server.post_ticks([{"symbol": "BTC-USD", "price": "1.5"}])[0]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /stream?symbols=BTC-USD {version}\r\nHost: t\r\n\r\n".encode())
        got = _read_until(sock, b"event: snapshot")
        posted = server.post_ticks([{"symbol": "BTC-USD", "price": "1.6"}])[0]
        got = _read_until(sock, f'"id":{posted},'.encode(), got)
        got = _read_until(sock, b"\n\n" + (b"\r\n" if version == "HTTP/1.1" else b""), got)
    head_bytes, _, body = got.partition(b"\r\n\r\n")
    lines = head_bytes.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 200 ok"
    assert "connection: close" in lines
    assert "content-type: text/event-stream; charset=utf-8" in lines
    assert not any(line.startswith("content-length") for line in lines)
    if version == "HTTP/1.1":
        assert "transfer-encoding: chunked" in lines
        body = _unchunk(body)
    else:
        assert not any(line.startswith("transfer-encoding") for line in lines)
    frames = [f for f in body.decode().split("\n\n") if f]
    assert frames[0].startswith("retry: ")
    assert frames[1].startswith(f"id: {head}\nevent: snapshot\n")
    assert frames[2] == (
        f"id: {posted}\nevent: tick\n"
        f'data: {{"id":{posted},"symbol":"BTC-USD","price":"1.6","ts":"{_ts(frames[2])}"}}'
    )


def _ts(frame: str) -> str:
    return frame.rsplit('"ts":"', 1)[1].split('"', 1)[0]
