"""Trade sizes: kept exactly from POST to the log, pages, snapshots and stream; absent if none."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alembic import command
from flask import Flask
from sqlalchemy import create_engine, text

from tests.fakes import TOKEN
from ticker import log, sse
from ticker.cli import alembic_config
from ticker.state import app_state

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def publish(client: Any, body: Any) -> list[int]:
    response = client.post(
        "/api/ticks", data=json.dumps(body), headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 201, response.get_json()
    ids: list[int] = response.get_json()["ids"]
    return ids


@pytest.mark.parametrize("size", ["0", "0.00100000", "12", "123456789.123456789000"])
def test_a_size_is_kept_exactly_everywhere(app: Flask, client: Any, size: str) -> None:
    (tick_id,) = publish(client, {"symbol": "BTC-USD", "price": "67012.35", "size": size})
    (page,) = client.get("/api/ticks?symbol=BTC-USD").get_json()["ticks"]
    assert page["size"] == size
    (snap,) = client.get("/api/snapshot?symbols=BTC-USD").get_json()["ticks"]
    assert snap["size"] == size
    latest = {r["symbol"]: r["tick"] for r in client.get("/api/symbols").get_json()["symbols"]}
    assert latest["BTC-USD"]["size"] == size
    with app_state(app).engine.connect() as conn:
        (event,) = log.read_after(conn, 0, None, 10)
    assert event.size == size
    assert f',"size":"{size}"}}'.encode() in sse.tick(event)
    assert json.loads(sse.tick(event).split(b"data: ")[1])["id"] == tick_id


def test_a_size_given_as_a_json_number_is_kept_as_written(client: Any) -> None:
    response = client.post(
        "/api/ticks",
        data='{"symbol": "AAPL", "price": "1", "size": 0.500}',
        headers=AUTH,
        content_type="application/json",
    )
    assert response.status_code == 201
    (tick,) = client.get("/api/ticks?symbol=AAPL").get_json()["ticks"]
    assert tick["size"] == "0.500"


def test_a_tick_without_a_size_has_no_size_key_not_null(client: Any) -> None:
    publish(
        client, [{"symbol": "AAPL", "price": "1"}, {"symbol": "AAPL", "price": "2", "size": None}]
    )
    ticks = client.get("/api/ticks?symbol=AAPL").get_json()["ticks"]
    assert [("size" in t) for t in ticks] == [False, False]
    (snap,) = client.get("/api/snapshot?symbols=AAPL").get_json()["ticks"]
    assert "size" not in snap


def test_a_bad_size_in_a_batch_writes_nothing(app: Flask, client: Any) -> None:
    body = [
        {"symbol": "AAPL", "price": "1", "size": "1"},
        {"symbol": "AAPL", "price": "1", "size": "-2"},
    ]
    response = client.post(
        "/api/ticks", data=json.dumps(body), headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 422
    error = response.get_json()
    assert (error["index"], error["field"]) == (1, "size")
    assert "item 1" in error["error"] and "size" in error["error"]
    assert log.head(app_state(app).engine) == 0


def test_rows_from_before_the_size_migration_have_no_size(db_url: str) -> None:
    config = alembic_config(db_url)
    command.upgrade(config, "0001")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ticks (symbol, price, ts) VALUES ('AAPL', '230.10', 5)"))
    command.upgrade(config, "head")
    with engine.connect() as conn:
        (event,) = log.read_after(conn, 0, None, 10)
    engine.dispose()
    assert event.size is None and "size" not in event.to_dict()


@pytest.mark.server
def test_the_stream_carries_sizes_in_replay_snapshot_and_live(serve: Any) -> None:
    from tests.sse_client import SSEStream

    # One worker: a POST reaches its hub before it is answered.  (With two, a
    # fresh stream on the other worker may get its snapshot a poll behind.)
    server = serve(workers=1, source="none", symbols="BTC-USD,AAPL")
    server.post_ticks([{"symbol": "BTC-USD", "price": "67012.35", "size": "0.00100000"}])
    with SSEStream(server.base + "/stream?symbols=BTC-USD,AAPL&last_event_id=0") as stream:
        frames = stream.frames()
        # The tick comes in the replay, or just after the live marker when the
        # worker's hub had not read it yet: read until both have come.
        got = []
        while not {"tick", "live"} <= {f.event for f in got}:
            got.append(next(frames))
        tick = next(f for f in got if f.event == "tick")
        assert tick.json()["size"] == "0.00100000"
        server.post_ticks([{"symbol": "AAPL", "price": "230.10"}])
        live = next(f for f in frames if f.event == "tick")
        assert live.json()["symbol"] == "AAPL" and "size" not in live.json()
    with SSEStream(server.base + "/stream?symbols=BTC-USD") as stream:
        snapshot = next(f for f in stream.frames() if f.event == "snapshot")
        assert snapshot.json()["ticks"][0]["size"] == "0.00100000"
