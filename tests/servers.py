"""The real processes tests start: ``ticker serve`` (gunicorn), ``ticker produce``, the CLI.

Starting a server makes a test slow, so every test that does is marked
``server`` (``pytest -m "not server"`` is the fast subset).  The marker cannot
rot: whatever starts a server or a browser calls :func:`require_server_mark`,
which fails a test that is not marked.  (Not in ``fakes``: those are stand-ins
that run inside the test's process; these are the real things, each a process.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import TOKEN
from ticker import ROOT

# The test being run, set by conftest's hook: what require_server_mark checks.
current_test: pytest.Item | None = None


def require_server_mark(what: str) -> None:
    """Fail the current test, saying to mark it, unless it is marked ``server``."""
    item = current_test
    if item is not None and item.get_closest_marker("server") is None:
        pytest.fail(
            f"{item.nodeid} starts {what} but is not marked `server`: add "
            "@pytest.mark.server to it (or `pytestmark = pytest.mark.server` to its module) "
            'so that `pytest -m "not server"` stays the fast subset',
            pytrace=False,
        )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ticker_env(**config: Any) -> dict[str, str]:
    """Return this process's environment without its ``TICKER_*``, plus ``config`` as such.

    ``ticker_env(database_url=url, retention="10")`` sets ``TICKER_DATABASE_URL``
    and ``TICKER_RETENTION``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    env.update({f"TICKER_{k.upper()}": str(v) for k, v in config.items()})
    return env


def run_ticker(*args: str, **config: Any) -> subprocess.CompletedProcess[str]:
    """Run one ``ticker`` command that ends by itself (``prune``, ``db upgrade``)."""
    return subprocess.run(
        [sys.executable, "-m", "ticker.cli", *args],
        env=ticker_env(**config),
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_produce(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    """Start ``ticker produce`` (the producer on its own) with ``env``; stderr is piped."""
    require_server_mark("`ticker produce`")
    return subprocess.Popen(
        [sys.executable, "-m", "ticker.cli", "produce", *args],
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Return every sample of a Prometheus text as ``name{label="value",...}`` -> value."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


# How the README starts ticker under gunicorn: the CLI, plain gunicorn in the
# checkout (it reads gunicorn.conf.py there), and plain gunicorn from elsewhere,
# pointed at the checkout's config (gunicorn reads no gunicorn.conf.py after --chdir).
ELSEWHERE = ["-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(ROOT)]
STARTS = {
    "serve": lambda workers: ["-m", "ticker.cli", "serve"],
    "plain": lambda workers: ["-m", "gunicorn", "-k", "gevent", "-w", str(workers), "wsgi:app"],
    "elsewhere": lambda workers: ["-m", "gunicorn", *ELSEWHERE, "-w", str(workers), "wsgi:app"],
}


class Server:
    """ticker under real gunicorn in a subprocess, started as ``start`` names; real HTTP."""

    def __init__(
        self,
        db_url: str,
        log_path: Path,
        workers: int = 2,
        port: int | None = None,
        start: str = "serve",
        **config: Any,
    ) -> None:
        require_server_mark("a gunicorn server")
        config = {"database_url": db_url, "publish_token": TOKEN, **config}
        self.db_url: str = config["database_url"]
        self.port = free_port() if port is None else port
        self.base = f"http://127.0.0.1:{self.port}"
        env = ticker_env(**config)
        env.update({"PORT": str(self.port), "WEB_CONCURRENCY": str(workers)})
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *STARTS[start](workers)],
            env=env,
            cwd=log_path.parent if start == "elsewhere" else ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_healthy()
        except BaseException:  # a server that never answered is not left running
            self.stop()
            raise

    def wait_healthy(self, timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                return self.get("/healthz")
            except (OSError, urllib.error.URLError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.load(response)

    def metrics(self) -> dict[str, float]:
        """Scrape ``/metrics`` (whichever worker answers) and parse it."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return parse_metrics(response.read().decode())

    def post_ticks(self, ticks: list[dict[str, Any]] | dict[str, Any]) -> list[int]:
        request = urllib.request.Request(
            self.base + "/api/ticks",
            data=json.dumps(ticks).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            ids: list[int] = json.load(response)["ids"]
            return ids

    def log_text(self) -> str:
        """Return what the servers of this test wrote to their log so far."""
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's children that run its command line.

        (Not the migrations' process, a child too while it runs.)
        """
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        master = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()
        return [int(p) for p in out.stdout.split() if _cmdline(int(p)) == master]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile
