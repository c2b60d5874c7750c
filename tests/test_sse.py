"""The SSE wire format: exact bytes of every kind of message."""

from __future__ import annotations

import json

from ticker import sse
from ticker.events import Event

TS = 1_795_255_200_123_456  # 2026-11-21T10:00:00.123456Z


def frames(raw: bytes) -> list[str]:
    """Split a chunk into its messages; each must end with exactly one blank line."""
    text = raw.decode()
    assert text.endswith("\n\n") and not text.endswith("\n\n\n")
    return text[:-2].split("\n\n")


def test_tick_message_is_exact() -> None:
    event = Event(1842, "BTC-USD", "67012.35", TS)
    assert sse.tick(event) == (
        b"id: 1842\n"
        b"event: tick\n"
        b'data: {"id":1842,"symbol":"BTC-USD","price":"67012.35",'
        b'"ts":"2026-11-21T10:00:00.123456Z"}\n'
        b"\n"
    )


def test_tick_keeps_the_price_string_exactly() -> None:
    event = Event(7, "PEPE-USD", "0.00001234", TS)
    (frame,) = frames(sse.tick(event))
    data = frame.split("\n")[2].removeprefix("data: ")
    assert json.loads(data)["price"] == "0.00001234"
    assert '"price":"0.00001234"' in data


def test_message_with_id_is_exact() -> None:
    body = {"head": 12, "ticks": []}
    assert sse.message("snapshot", body, id=12) == (
        b'id: 12\nevent: snapshot\ndata: {"head":12,"ticks":[]}\n\n'
    )


def test_message_without_id_has_no_id_line() -> None:
    assert sse.message("live", {"replayed": 3, "head": 9}) == (
        b'event: live\ndata: {"replayed":3,"head":9}\n\n'
    )


def test_message_id_zero_is_still_sent() -> None:
    assert sse.message("snapshot", {"head": 0, "ticks": []}, id=0).startswith(b"id: 0\n")


def test_data_is_one_line_of_json_even_with_newlines_in_values() -> None:
    body = {"error": "line one\nline two\r\nthree\u2028four", "n": [1, 2]}
    (frame,) = frames(sse.message("busy", body))
    lines = frame.split("\n")
    assert lines[0] == "event: busy"
    assert len(lines) == 2 and lines[1].startswith("data: ")
    assert json.loads(lines[1].removeprefix("data: ")) == body


def test_retry_is_exact() -> None:
    assert sse.retry(2500) == b"retry: 2500\n\n"


def test_keepalive_without_id_is_a_comment_only() -> None:
    assert sse.keepalive() == b": keepalive\n\n"


def test_keepalive_with_id_moves_the_resume_point() -> None:
    assert sse.keepalive(77) == b": keepalive\nid: 77\n\n"
    assert sse.keepalive(0) == b": keepalive\nid: 0\n\n"


def test_messages_concatenate_into_separate_frames() -> None:
    chunk = sse.retry(1000) + sse.tick(Event(1, "AAPL", "230.00", TS)) + sse.keepalive(5)
    assert frames(chunk) == [
        "retry: 1000",
        'id: 1\nevent: tick\ndata: {"id":1,"symbol":"AAPL","price":"230.00",'
        '"ts":"2026-11-21T10:00:00.123456Z"}',
        ": keepalive\nid: 5",
    ]


def test_tick_builds_the_same_bytes_as_the_json_encoder() -> None:
    import random
    from datetime import UTC, datetime, timedelta

    from ticker.events import format_ts

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rng = random.Random(5)
    for _ in range(5000):
        ts = rng.randint(0, 2**52)
        assert format_ts(ts) == (epoch + timedelta(microseconds=ts)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
    for symbol in ["BTC-USD", 'A"B', "<B>X", "\\X", "&AMP;"]:
        for price in ["1", "0.00001234", "67012.35000000", "1²", "1.2.3"]:
            event = Event(7, symbol, price, rng.randint(0, 2**52))
            assert sse.tick(event) == f"id: 7\nevent: tick\ndata: {event.to_json()}\n\n".encode()
    for size in [None, "0", "0.00100000", "12", "1²", '"q"']:
        for price in ["1", "0.00001234", "67012.35000000"]:
            event = Event(7, "BTC-USD", price, rng.randint(0, 2**52), size)
            assert sse.tick(event) == f"id: 7\nevent: tick\ndata: {event.to_json()}\n\n".encode()


def test_tick_carries_the_size_exactly_and_leaves_it_out_when_absent() -> None:
    sized = Event(1842, "BTC-USD", "67012.35", TS, "0.00100000")
    assert sse.tick(sized) == (
        b"id: 1842\nevent: tick\n"
        b'data: {"id":1842,"symbol":"BTC-USD","price":"67012.35",'
        b'"ts":"2026-11-21T10:00:00.123456Z","size":"0.00100000"}\n\n'
    )
    assert b"size" not in sse.tick(Event(1842, "BTC-USD", "67012.35", TS))
    assert "size" not in Event(1, "A", "1", TS).to_dict()
