"""Failing writes are visible: the SQLite file on a 4 MB disk that fills up, then has room again.

The append that does not fit answers 503 naming the cause and writes nothing
of its batch; ``/healthz`` says the write side is failing (degraded, the
cause, since when) and ``/metrics`` counts the failed appends; once space
comes back, appends resume with the next id and ``/healthz`` is ok again.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.fakes import TOKEN, log_ids
from tests.servers import parse_metrics
from ticker import create_app, lifecycle
from ticker.cli import upgrade
from ticker.state import app_state

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs mounted for the test (root only; skipped, saying why, elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def post(client: Any, n: int, price: str = "67012.35") -> Any:
    batch = [{"symbol": "AAPL", "price": price, "size": "1.25"} for _ in range(n)]
    return client.post("/api/ticks", data=json.dumps(batch), headers=AUTH)


def test_a_full_disk_is_a_503_naming_it_healthz_degraded_counted_then_recovery(
    small_disk: Path,
) -> None:
    url = f"sqlite:///{small_disk / 'ticker.db'}"
    app: Flask = create_app(
        {"database_url": url, "producer": "off", "publish_token": TOKEN, "symbols": "AAPL"}
    )
    upgrade(app)
    client = app.test_client()
    try:
        filler = small_disk / "filler"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 600_000))  # leave about 600 KB
        written: list[int] = []
        for _ in range(200):
            answer = post(client, 1000)
            if answer.status_code != 201:
                break
            written += answer.get_json()["ids"]
        else:
            pytest.fail("the disk never filled")
        assert answer.status_code == 503
        error = answer.get_json()["error"]
        assert error.startswith("database unavailable, retry shortly") and "full" in error
        assert log_ids(url) == written  # nothing of the refused batch was written

        health = client.get("/healthz")
        assert health.status_code == 200
        body = health.get_json()
        assert body["status"] == "degraded"
        assert body["writes"]["ok"] is False and "full" in body["writes"]["cause"]
        assert body["writes"]["failing_since"] is not None
        assert body["writes"]["failed_appends"] >= 1
        metrics = parse_metrics(client.get("/metrics").get_data(as_text=True))
        assert metrics["ticker_log_append_failures_total"] >= 1
        assert client.get("/api/symbols").status_code == 200  # reads still work

        filler.unlink()  # space comes back
        again = post(client, 10, "67100.00")
        assert again.status_code == 201, again.get_json()
        assert again.get_json()["ids"] == list(range(written[-1] + 1, written[-1] + 11))
        body = client.get("/healthz").get_json()
        assert body["status"] == "ok" and body["writes"]["ok"] is True
        assert body["writes"]["failed_appends"] >= 1  # the count stays
    finally:
        lifecycle.stop(app_state(app))
        app_state(app).engine.dispose()
