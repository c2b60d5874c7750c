"""GET /metrics: what the streams and the producer did, added up across gunicorn workers."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.fakes import QUIET, SQLITE_ONLY, SYMBOLS, TOKEN, eventually, log_ids, tick_ids
from tests.servers import Server, free_port, parse_metrics, start_produce, ticker_env
from tests.sse_client import Message, SSEStream
from ticker import create_app, gunicorn_conf, metrics
from ticker.cli import upgrade
from ticker.config import MULTIPROC_ENV
from ticker.errors import SourceError
from ticker.events import now_us
from ticker.sources import Source
from ticker.state import app_state

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def until_metrics(server: Server, want: dict[str, float], timeout: float = 15) -> dict[str, float]:
    """Scrape until every metric in ``want`` has its value; fail showing the differences."""
    end = time.monotonic() + timeout
    while True:
        got = server.metrics()
        wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        if not wrong:
            return got
        assert time.monotonic() < end, f"metrics (got, want) after {timeout}s: {wrong}"
        time.sleep(0.1)


# ---- one process: Flask's test client, a registry of its own ----


def test_metrics_names_every_series_and_reads_the_log(make_app: Callable[..., Flask]) -> None:
    app = make_app(**QUIET)
    client = app.test_client()
    ticks = [{"symbol": s, "price": "1.5"} for s in SYMBOLS]
    ids = client.post("/api/ticks", json=ticks, headers=AUTH).get_json()["ids"]
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    got = parse_metrics(response.get_data(as_text=True))
    for name in [
        "ticker_streams_open",
        "ticker_streams_opened_total",
        "ticker_streams_refused_total",
        "ticker_events_sent_total",
        "ticker_events_replayed_total",
        'ticker_stream_resets_total{reason="expired"}',
        'ticker_stream_resets_total{reason="ahead"}',
        "ticker_stream_fallbacks_total",
        "ticker_tick_to_send_seconds_count",
        'ticker_tick_to_send_seconds_bucket{le="+Inf"}',
        "ticker_producer_ticks_total",
        'ticker_producer_errors_total{stage="source"}',
        'ticker_producer_errors_total{stage="run"}',
        "ticker_log_pruned_events_total",
        "ticker_producer_lease_held",
    ]:
        assert got[name] == 0, name
    assert got["ticker_database_up"] == 1
    assert got["ticker_log_head_id"] == ids[-1]
    assert got["ticker_log_pruned_through_id"] == 0
    assert 0 <= got["ticker_log_newest_tick_age_seconds"] < 60
    # OpenMetrics for a scraper that asks for it.
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.get_data(as_text=True).rstrip().endswith("# EOF")


def test_stream_hooks_count_writes_and_time_only_live_ones(make_app: Callable[..., Flask]) -> None:
    app = make_app(**QUIET, max_streams=2)
    streams = app_state(app).streams
    assert isinstance(streams, metrics.MeteredStreams)
    first, second = streams.acquire("a"), streams.acquire("b")
    assert first is not None and second is not None
    assert streams.acquire("c") is None  # the third is refused: busy
    streams.on_sent(100, now_us() - 60_000_000, replay=True)  # a minute-old replay: not timed
    streams.on_sent(3, now_us() - 20_000, replay=False)  # 20 ms old, live
    streams.on_sent(0, None, replay=True)  # an empty last page counts nothing
    streams.on_reset("expired")
    streams.on_reset("ahead")
    streams.on_reset("ahead")
    streams.on_fallback()
    first.close()
    first.close()  # a slot is given back once
    got = parse_metrics(app.test_client().get("/metrics").get_data(as_text=True))
    assert got["ticker_streams_open"] == 1
    assert got["ticker_streams_opened_total"] == 2
    assert got["ticker_streams_refused_total"] == 1
    assert got["ticker_events_sent_total"] == 103
    assert got["ticker_events_replayed_total"] == 100
    assert got['ticker_stream_resets_total{reason="expired"}'] == 1
    assert got['ticker_stream_resets_total{reason="ahead"}'] == 2
    assert got["ticker_stream_fallbacks_total"] == 1
    assert got["ticker_tick_to_send_seconds_count"] == 1
    assert 0.02 <= got["ticker_tick_to_send_seconds_sum"] < 5
    assert got['ticker_tick_to_send_seconds_bucket{le="0.01"}'] == 0
    assert got['ticker_tick_to_send_seconds_bucket{le="5.0"}'] == 1
    # /healthz reads the same registry of slots.
    health = app.test_client().get("/healthz").get_json()["streams"]
    assert (health["open"], health["sent"], health["replayed"]) == (1, 103, 100)


class Failing(Source):
    """A source whose every fetch fails."""

    timeout = 1.0

    def next_ticks(self, now_us: int) -> list[Any]:
        raise SourceError("the exchange is down")


def test_producer_ticks_and_errors_are_counted(make_app: Callable[..., Flask], db_url: str) -> None:
    app = make_app(source="sim", symbols="BTC-USD,AAPL", seed=1)
    producer = app_state(app).producer
    produced = [producer.produce() for _ in range(3)]
    assert all(len(ids) == 2 for ids in produced)
    producer.source = Failing()
    producer.produce()
    producer.state.leader = False

    def broken() -> bool:
        raise RuntimeError("the database went away")

    producer._take_over = broken
    producer.produce()
    got = parse_metrics(app.test_client().get("/metrics").get_data(as_text=True))
    assert got["ticker_producer_ticks_total"] == 6 == len(log_ids(db_url))
    assert got['ticker_producer_errors_total{stage="source"}'] == 1
    assert got['ticker_producer_errors_total{stage="run"}'] == 1
    assert got["ticker_producer_lease_held"] == 1


@SQLITE_ONLY
def test_metrics_answer_when_the_database_does_not(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_app(**QUIET)
    url = str(app_state(app).engine.url)
    app_state(app).engine.dispose()
    Path(url.removeprefix("sqlite:///")).unlink()
    Path(url.removeprefix("sqlite:///")).mkdir()  # a directory where the file was
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    got = parse_metrics(response.get_data(as_text=True))
    assert got["ticker_database_up"] == 0
    assert "ticker_log_head_id" not in got
    assert got["ticker_events_sent_total"] == 0


def test_multiprocess_dir_is_emptied_and_only_ours_is_removed(tmp_path: Path) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    assert gunicorn_conf.prepare_multiprocess_dir(str(given)) == str(given)
    assert [p.name for p in given.iterdir()] == ["keep.txt"]
    gunicorn_conf.remove_multiprocess_dir(str(given))
    assert given.is_dir()  # an operator's directory is never deleted
    made = Path(gunicorn_conf.prepare_multiprocess_dir(None))
    assert made.is_dir() and made.name.startswith(gunicorn_conf.TEMP_PREFIX)
    (made / "gauge_livesum_1.db").write_bytes(b"x")
    gunicorn_conf.remove_multiprocess_dir(str(made))
    assert not made.exists()


# ---- several processes: real gunicorn, two workers ----


def stream_pids(server: Server) -> dict[str, int]:
    """Return which worker opened each stream, from the request ids in the server's log."""
    text = server.log_text()
    pattern = r"\[(\d+)\] ticker\.views: stream opened request_id=(\S+)"
    return {rid: int(pid) for pid, rid in re.findall(pattern, text)}


@pytest.mark.server
def test_metrics_add_up_what_a_test_did_across_two_workers(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=2, heartbeat=0.5, **QUIET)
    first = server.post_ticks([{"symbol": s, "price": "10.5"} for s in SYMBOLS])

    # Open streams until both workers hold some (the kernel picks the worker).
    streams: dict[str, SSEStream] = {}
    frames: dict[str, Iterator[Message]] = {}
    snapshot_at: dict[str, int] = {}  # a worker whose hub lags opens at an older head

    def both_workers_hold_streams() -> bool:
        rid = f"s-{len(streams)}"
        stream = SSEStream(server.base + "/stream?symbols=BTC-USD,AAPL", {"X-Request-ID": rid})
        streams[rid], frames[rid] = stream, stream.frames()
        next(frames[rid])
        snapshot = next(frames[rid])
        assert snapshot.event == "snapshot" and snapshot.id is not None
        snapshot_at[rid] = int(snapshot.id)
        return len(set(stream_pids(server).values())) == 2 and len(streams) >= 4

    eventually(both_workers_hold_streams, "streams on both workers", timeout=30)
    n = len(streams)

    for batch in range(3):  # ticks of the streams' symbols, and others they skip
        posted = server.post_ticks(
            [{"symbol": SYMBOLS[i % 3], "price": f"{batch + 1}.{i}"} for i in range(12)]
        )
    last = posted[-1]
    sent = 0
    for rid, stream in streams.items():
        ids = tick_ids(stream.ticks_until(lambda f: f.id is not None and int(f.id) >= last))
        assert ids == log_ids(server.db_url, ["BTC-USD", "AAPL"], after=snapshot_at[rid]), rid
        sent += len(ids)

    # A replay, and a reset for an id ahead of the head.
    replay = SSEStream(server.base + "/stream?symbols=ETH-USD", {"Last-Event-ID": str(first[-1])})
    replayed = tick_ids(replay.ticks_until(lambda f: f.event == "live"))
    assert replayed == log_ids(server.db_url, ["ETH-USD"], after=first[-1])
    ahead = SSEStream(server.base + "/stream?symbols=ETH-USD", {"Last-Event-ID": str(last + 99)})
    assert [f.event for _, f in zip(range(2), ahead.frames(), strict=False)][1] == "reset"

    r = len(replayed)
    want = {
        "ticker_streams_open": n + 2,
        "ticker_streams_opened_total": n + 2,
        "ticker_events_sent_total": sent + r,
        "ticker_events_replayed_total": r,
        'ticker_stream_resets_total{reason="ahead"}': 1,
        'ticker_stream_resets_total{reason="expired"}': 0,
        "ticker_log_head_id": last,
        "ticker_producer_ticks_total": 0,  # source none: ticks came through the API
    }
    got = until_metrics(server, want)
    # Every stream had at least one live write; a write may carry several ticks.
    assert n <= got["ticker_tick_to_send_seconds_count"] <= sent
    assert got["ticker_tick_to_send_seconds_sum"] / got["ticker_tick_to_send_seconds_count"] < 5
    for _ in range(6):  # whichever worker answers, the sums are the same
        again = server.metrics()
        assert {name: again[name] for name in want} == want

    # Closed streams stop counting.
    replay.close()
    ahead.close()
    until_metrics(server, {"ticker_streams_open": n})

    # A worker killed outright never closes its streams: the master drops its gauge,
    # and what it sent stays in the totals.
    pids = stream_pids(server)
    victim = pids["s-0"]
    survivors = [rid for rid in streams if pids[rid] != victim]
    sent_before = server.metrics()["ticker_events_sent_total"]
    os.kill(victim, signal.SIGKILL)
    got = until_metrics(server, {"ticker_streams_open": len(survivors)})
    assert got["ticker_events_sent_total"] >= sent_before
    assert got["ticker_streams_opened_total"] == n + 2
    for stream in streams.values():
        stream.close()
    until_metrics(server, {"ticker_streams_open": 0})


@pytest.mark.server
@SQLITE_ONLY
def test_ticker_produce_serves_its_metrics(db_url: str, tmp_path: Path) -> None:
    upgrade(create_app({"database_url": db_url}))
    port = free_port()
    env = ticker_env(database_url=db_url, tick_interval=0.05, symbols="AAPL")
    env.pop(MULTIPROC_ENV, None)
    proc = start_produce(env, "--metrics-port", str(port))
    try:

        def produced() -> dict[str, float] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    got = parse_metrics(r.read().decode())
            except OSError:
                return None
            return got if got["ticker_producer_ticks_total"] >= 3 else None

        got = eventually(produced, "the standalone producer's metrics", timeout=20)
        assert got["ticker_producer_lease_held"] == 1
        assert got["ticker_log_head_id"] >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
