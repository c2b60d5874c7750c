"""``ticker loadtest`` against a real server, and its delivery checks on their own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.fakes import TOKEN
from tests.servers import Server
from ticker.loadtest import Published, Received, make_report, render, watchlists


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


@pytest.mark.server
def test_loadtest_random_watchlists_and_batches_against_a_real_server(
    serve: Callable[..., Server],
) -> None:
    symbols = [f"S{n:02d}" for n in range(40)]
    server = serve(source="none", symbols=",".join(symbols))
    done = subprocess.run(
        [
            sys.executable, "-m", "ticker.cli", "loadtest", "--url", server.base,
            "--clients", "80", "--per-client", "5", "--watchlists", "random", "--seed", "7",
            "--rate", "400", "--batch", "10", "--duration", "2", "--token", TOKEN, "--json",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["connected"] == 80 and report["failed"] == 0
    assert report["publishes_planned"] == 80, "400 ticks/s in tens for 2 s"
    assert report["publishes_made"] == report["publishes_planned"], report
    assert report["published"] == 10 * report["publishes_made"] == report["ticks_planned"]
    # Each client watches 5 of 40 symbols: about an eighth of what was published.
    assert report["events_received"] >= report["published"] * 80 // 8 * 0.9
    assert (report["lost"], report["duplicated"], report["reordered"]) == (0, 0, 0)
    assert report["unexpected"] == 0


def test_watchlists_random_each_its_own_reproducibly_shared_spread_evenly() -> None:
    symbols = [f"S{n:03d}" for n in range(500)]
    drawn = watchlists("random", 1000, symbols, 10, seed=3)
    assert drawn == watchlists("random", 1000, symbols, 10, seed=3)
    assert drawn != watchlists("random", 1000, symbols, 10, seed=4)
    assert all(len(set(w)) == 10 for w in drawn)
    assert len(set(map(frozenset, drawn))) > 990, "each client its own"
    shared = watchlists("shared", 1000, symbols, 10, seed=0)
    assert set(shared) == {tuple(symbols[i] for i in range(0, 500, 50))}
    assert watchlists("rotating", 3, symbols[:4], 2, seed=0) == [
        ("S000", "S001"), ("S001", "S002"), ("S002", "S003")
    ]  # fmt: skip


def test_the_report_counts_loss_duplicates_and_reordering() -> None:
    published = Published(ids={10: "A", 11: "B", 12: "A", 13: "A", 14: "A"})
    fine = Received(("A",), start=10, ids=[12, 13, 14])
    lossy = Received(("A",), start=10, ids=[12, 14])
    doubled = Received(("A",), start=11, ids=[12, 13, 13, 14])
    swapped = Received(("A", "B"), start=10, ids=[12, 11, 13, 14])
    foreign = Received(("B",), start=10, ids=[11, 12])  # 12 is A's
    published.planned, published.made = 7, 5
    report = make_report([fine, lossy, doubled, swapped, foreign], published, 5, 0.1, 1.0, 15, 5.0)
    assert (report["lost"], report["duplicated"], report["reordered"]) == (1, 1, 1)
    assert report["unexpected"] == 1
    table = render(report)
    assert "lost / duplicated / reordered  1 / 1 / 1" in table
    assert "publishes made / planned       5 / 7" in table


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
