"""ticker's gunicorn worker at a stop: everything handed on, then the process ends at once."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine

from tests.fakes import SIM
from tests.servers import Server
from tests.sse_client import SSEStream
from tests.test_producer import holder_pid
from ticker import lease

# A process that ends through exit_now: what Python's exit would do and what it skips.
EXIT_NOW = """
import atexit, sys
from ticker.worker import GeventWorker

class TornDown:
    def __del__(self):
        print("torn down", file=sys.stderr, flush=True)

kept = TornDown()  # freed by Python's teardown, if it runs
atexit.register(lambda: print("atexit ran", file=sys.stderr, flush=True))
sys.stdout.write("still buffered")  # no newline, stdout a pipe: not written yet
GeventWorker.exit_now(None)
print("after exit_now")
"""


def test_exit_now_runs_the_exit_functions_flushes_and_skips_the_teardown() -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXIT_NOW], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "still buffered"
    assert "atexit ran" in done.stderr
    assert "torn down" not in done.stderr  # the heap is left to the kernel


@pytest.mark.server
def test_a_stopped_worker_hands_the_lease_on_and_ends_with_status_0(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=1, **SIM)
    pid = holder_pid(server)
    assert server.worker_pids() == [pid]
    streams = [SSEStream(server.base + "/stream?symbols=BTC-USD") for _ in range(20)]
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    for stream in streams:  # every one ended, with the notice to reconnect
        assert any("shutdown, reconnect" in m.comments for m in stream.frames())
        stream.close()
    engine = create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            held = lease.current(conn)
    finally:
        engine.dispose()
    assert held is not None and held[1] == 0  # released by the worker, not left to lapse
    log = server.log_text()
    assert f"Worker exiting (pid: {pid})" in log
    assert "exited with code" not in log and "Traceback" not in log, log[-2000:]
