"""``ticker loadtest`` against a real server, and its delivery checks on their own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.fakes import TOKEN
from tests.servers import Server
from ticker.loadtest import Published, Received, make_report, render


@pytest.mark.server
def test_loadtest_reports_zero_loss_against_a_real_server(serve: Callable[..., Server]) -> None:
    server = serve(source="none", symbols="BTC-USD,ETH-USD,AAPL")
    done = subprocess.run(
        [
            sys.executable, "-m", "ticker.cli", "loadtest", "--url", server.base,
            "--clients", "60", "--per-client", "2", "--rate", "40", "--duration", "2",
            "--token", TOKEN, "--json",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # the run ends cleanly
    report = json.loads(done.stdout)
    assert report["connected"] == 60 and report["failed"] == 0
    assert report["published"] >= 40 and report["publish_errors"] == 0
    assert report["events_received"] >= report["published"] * 60 * 2 // 3 * 0.9
    assert (report["lost"], report["duplicated"], report["reordered"]) == (0, 0, 0)
    assert report["latency_ms"]["p99"] is not None


def test_the_report_counts_loss_duplicates_and_reordering() -> None:
    published = Published(ids={10: "A", 11: "B", 12: "A", 13: "A", 14: "A"})
    fine = Received(("A",), start=10, ids=[12, 13, 14])
    lossy = Received(("A",), start=10, ids=[12, 14])
    doubled = Received(("A",), start=11, ids=[12, 13, 13, 14])
    swapped = Received(("A", "B"), start=10, ids=[12, 11, 13, 14])
    report = make_report([fine, lossy, doubled, swapped], published, 4, 0.1, 1.0, 13, 5.0)
    assert (report["lost"], report["duplicated"], report["reordered"]) == (1, 1, 1)
    assert "lost / duplicated / reordered  1 / 1 / 1" in render(report)


def test_loadtest_without_uvloop_says_what_to_install() -> None:
    # The load tool's dependency is an extra, not the server's: block it as if not installed.
    run_cli = (
        "import sys; sys.modules['uvloop'] = None; sys.argv = ['ticker', 'loadtest'];"
        "import ticker.cli; ticker.cli.main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", run_cli], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'ticker[load]'" in done.stderr
    assert "uvloop" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
