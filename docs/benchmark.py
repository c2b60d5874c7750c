"""Rerun the figures of docs/benchmarks.md: ``.venv/bin/python docs/benchmark.py``.

Method: the server is ONE gunicorn gevent worker pinned to core 0
(``taskset -c 0``), and the load client and publisher are pinned to core 1.
Server CPU per delivered event is the user+sys time of the server processes
(master and worker) during the measured window, divided by the events the
clients received in it.  RSS per idle stream is (worker RSS with N idle
streams - RSS before) / N.  The whole-machine run uses several workers and
several load processes on several 127.0.0.x source addresses.

Fan-out and idle streams are measured, in the same run, for ticker started
two ways (``ticker serve``, and the plain ``gunicorn -k gevent -w 1 wsgi:app``
in the checkout, which reads ``gunicorn.conf.py`` by itself) and for the plain
Flask + gevent fan-out of ``docs/reference_fanout.py`` (no log).  The rows are
named by the ``server`` column, and each figure is also given as a ratio to
the ``ticker serve`` row of the same load.

Options: ``--quick`` (shorter runs, smaller counts), ``--only NAME[,NAME]``
(``fanout``, ``rss``, ``log``, ``post``, ``posts``, ``candles``, ``storm``,
``watchlists``, ``machine``).  ``post`` is the appends alone, with and
without sizes; ``posts`` is single-tick POSTs over 32 keep-alive connections
(``docs/benchmark_posts.py``, an asyncio client on core 1) to the reference's
no-log POST and to ticker on SQLite and on PostgreSQL, in the same run, with
ratios to the reference; ``candles`` builds a log of a million ticks, rolls it
up and times ``/api/candles`` and ``/api/symbols``
(``docs/benchmark_market.py``); ``storm`` is a deploy's reconnect storm
(``docs/benchmark_storm.py``); ``watchlists`` is 1,000 to 5,000 streams each
with its own random 10 of 500 symbols against as many all watching the same
10, 1,000 ticks/s posted in batches of 20 (``docs/benchmark_watchlists.py``).
Only ever talks to 127.0.0.1 and the local PostgreSQL.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
TOKEN = "bench-token"
PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVE, PLAIN, REFERENCE = "ticker serve", "gunicorn wsgi:app", "reference"
SECTIONS = ("fanout", "rss", "log", "post", "posts", "candles", "storm", "watchlists", "machine")
KINDS = (SERVE, PLAIN, REFERENCE)  # the order in which each load runs against them


# What ticker logs when it runs without its gunicorn settings or broadcaster,
# and what any server logs when it fails: the benchmark repeats these lines.
NOTEWORTHY = (
    "without ticker's gunicorn settings",
    "cannot take streams over",
    "ERROR",
    "Traceback",
)


def server_command(kind: str, port: int, workers: int) -> tuple[list[str], Path]:
    """The command line that starts ``kind`` of server, and the directory it runs in.

    - ``ticker serve``: ticker's own command, which passes ticker's gunicorn
      settings (``PORT`` and ``WEB_CONCURRENCY`` come from the environment);
    - ``gunicorn wsgi:app``: gunicorn as its docs say to start it, in the
      checkout, with no ticker-specific flags: it reads ``gunicorn.conf.py``
      there by itself (``--bind`` keeps it on 127.0.0.1 and this port);
    - ``reference``: ``docs/reference_fanout.py``, the plain Flask + gevent
      fan-out with no log that issue 5 compares ticker with, with ticker's
      worker connections and backlog.
    """
    if kind == SERVE:
        return [PY, "-m", "ticker.cli", "serve"], ROOT
    if kind == PLAIN:
        return [PY, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
                "--bind", f"127.0.0.1:{port}", "wsgi:app"], ROOT  # fmt: skip
    if kind == REFERENCE:
        return [PY, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
                "--worker-connections", "19000", "--backlog", "4096",
                "--bind", f"127.0.0.1:{port}", "reference_fanout:app"], ROOT / "docs"  # fmt: skip
    raise ValueError(f"unknown server kind {kind!r}")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


class Server:
    """A server of ``kind`` pinned to ``cpus``, with its processes' CPU time and memory.

    ``db_url`` is ticker's log (the reference has none).
    """

    def __init__(
        self,
        kind: str = SERVE,
        db_url: str = "",
        workers: int = 1,
        cpus: str | None = "0",
        port: int | None = None,
        **config: Any,
    ):
        self.kind = kind
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
        env.update(
            {
                "TICKER_DATABASE_URL": db_url,
                "TICKER_PUBLISH_TOKEN": TOKEN,
                "TICKER_SOURCE": "none",
                "TICKER_LOG_LEVEL": "WARNING",
                "PORT": str(self.port),
                "WEB_CONCURRENCY": str(workers),
            }
        )
        env.update({f"TICKER_{k.upper()}": str(v) for k, v in config.items()})
        pin = ["taskset", "-c", cpus] if cpus else []
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the server)
        command, cwd = server_command(kind, self.port, workers)
        self.proc = subprocess.Popen(
            [*pin, *command], cwd=cwd, env=env, stdout=self.log, stderr=self.log
        )
        end = time.monotonic() + 60
        while True:
            try:
                self.get_json("/healthz")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"{kind}: {self.output()[-2000:]}") from None
                time.sleep(0.2)
        while len(self.workers()) < workers:
            time.sleep(0.1)

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as answer:
            return json.load(answer)

    def output(self) -> str:
        """What the server has logged so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def workers(self) -> list[int]:
        """The gunicorn workers: the master's children that run its command line.

        (Not the migrations' process, a child too while it runs.)
        """
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        master = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()
        return [int(p) for p in out.stdout.split() if _cmdline(int(p)) == master]

    def cpu_seconds(self) -> float:
        total = 0
        for pid in [self.proc.pid, *self.workers()]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def runqueue_seconds(self) -> float:
        """Time the worker processes spent runnable but waiting for their core (other load)."""
        total = 0
        for pid in self.workers():
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
        return total / 1e9

    def rss_kib(self) -> int:
        total = 0
        for pid in self.workers():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            for pid in self.workers():
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
        notes = [ln for ln in self.output().splitlines() if any(m in ln for m in NOTEWORTHY)]
        if notes:
            print(f"  ({self.kind} logged: {' / '.join(notes)[:600]})", file=sys.stderr)


def sqlite_url(tmp: Path, name: str) -> str:
    path = tmp / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def postgres_url(name: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"  (PostgreSQL skipped: {exc})")
        return None
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    return f"postgresql+psycopg://{base}/{name}"


def loadtest(
    server: Server, on_window: Any = None, cpus: str = "1", **options: Any
) -> dict[str, Any]:
    """Run ``ticker loadtest`` pinned to ``cpus``; ``on_window(phase)`` marks its window."""
    argv = ["taskset", "-c", cpus, PY, "-m", "ticker.cli", "loadtest", "--url", server.base]
    argv += ["--token", TOKEN, "--json"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if line.startswith("phase: ") and on_window:
            on_window(line.split()[1])
    report: dict[str, Any] = json.loads(proc.stdout.read())
    proc.wait()
    return report


def ticker_log(tmp: Path, kind: str, name: str) -> str:
    """A fresh SQLite log for a ticker server; none for the reference."""
    return "" if kind == REFERENCE else sqlite_url(tmp, name)


def fanout(tmp: Path, kind: str, clients: int, rate: float, duration: float) -> dict[str, Any]:
    """Server CPU per delivered event and latency: every client gets every tick."""
    server = Server(kind, ticker_log(tmp, kind, "fanout"), symbols="BTC-USD", max_streams=20000)
    cpu: dict[str, float] = {}
    try:
        report = loadtest(
            server,
            on_window=lambda phase: cpu.__setitem__(phase, server.cpu_seconds()),
            clients=clients,
            symbols="BTC-USD",
            rate=rate,
            duration=duration,
        )
    finally:
        server.stop()
    spent = cpu["measure-end"] - cpu["measure-start"]
    events = report["events_received"]
    return {
        "server": kind,
        "clients": clients,
        "ticks/s": rate,
        "connected": report["connected"],
        "events/s": report["events_per_second"],
        "server CPU µs/event": round(spent / events * 1e6, 1) if events else None,
        "p50 ms": report["latency_ms"]["p50"],
        "p99 ms": report["latency_ms"]["p99"],
        "max ms": report["latency_ms"]["max"],
        "lost/dup/reordered": f"{report['lost']}/{report['duplicated']}/{report['reordered']}",
    }


def idle_rss(tmp: Path, kind: str, clients: int) -> dict[str, Any]:
    """Worker RSS per idle stream."""
    server = Server(kind, ticker_log(tmp, kind, "idle"), symbols="BTC-USD", max_streams=20000)
    rss: dict[str, int] = {}
    try:
        for _ in range(20):  # warm the worker up before taking the baseline
            urllib.request.urlopen(server.base + "/healthz", timeout=5).read()
        rss["before"] = server.rss_kib()

        def window(phase: str) -> None:
            if phase == "measure-start":
                time.sleep(2)
                rss["with"] = server.rss_kib()

        report = loadtest(
            server, on_window=window, clients=clients, symbols="BTC-USD", rate=0, duration=3
        )
    finally:
        server.stop()
    per = (rss["with"] - rss["before"]) / report["connected"] if report["connected"] else None
    return {
        "server": kind,
        "idle streams": report["connected"],
        "RSS before MiB": round(rss["before"] / 1024, 1),
        "RSS with MiB": round(rss["with"] / 1024, 1),
        "KiB/stream": round(per, 2) if per is not None else None,
    }


def post_and_replay(
    db_url: str, total: int, sized: bool = False, replay: bool = True, **config: Any
) -> dict[str, Any]:
    """Append ``total`` ticks in POST batches of 1,000, then replay them to one client."""
    server = Server(SERVE, db_url, symbols="BTC-USD,ETH-USD,AAPL,MSFT", **config)
    try:
        # Measure the steady state: the producer (and its rollup job) settled in the worker.
        end = time.monotonic() + 30
        while server.get_json("/healthz")["producer"]["holder"] is None:
            if time.monotonic() > end:
                raise RuntimeError("no producer took the lease within 30 s")
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        symbols = ["BTC-USD", "ETH-USD", "AAPL", "MSFT"]
        started = time.perf_counter()
        for _ in range(0, total, 1000):
            batch = [{"symbol": symbols[i % 4], "price": f"{100 + i % 97}.25"} for i in range(1000)]
            if sized:
                for i, tick in enumerate(batch):
                    tick["size"] = f"0.{i % 89 + 1:03d}00000"
            body = json.dumps(batch)
            conn.request(
                "POST",
                "/api/ticks",
                body=body,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 201, answer.status
        appended = total / (time.perf_counter() - started)
        conn.close()
        if not replay:
            return {
                "database": db_url.split(":", 1)[0].split("+")[0],
                "sizes": "yes" if sized else "no",
                "rollup job": "off" if config else "every 1 s",
                "POST ticks/s (batches of 1,000)": round(appended),
            }

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        started = time.perf_counter()
        conn.request("GET", "/stream", headers={"Last-Event-ID": "0"})
        answer = conn.getresponse()
        received = 0
        tail = b""  # a frame marker may straddle two reads
        while True:
            chunk = answer.read1(1 << 20)
            if not chunk:
                break
            block = tail + chunk
            received += block.count(b"event: tick") - tail.count(b"event: tick")
            if b"event: live" in block:
                break
            tail = block[-16:]
        replay_seconds = time.perf_counter() - started
        conn.close()
    finally:
        server.stop()
    return {
        "database": db_url.split(":", 1)[0].split("+")[0],
        "POST ticks/s (batches of 1,000)": round(appended),
        "replayed events": received,
        "replay events/s": round(received / replay_seconds),
    }


def single_posts(kind: str, db_url: str, duration: float, connections: int = 32) -> dict[str, Any]:
    """Single-tick POSTs, closed loop over keep-alive connections: requests/s and latency."""
    server = Server(kind, db_url, symbols="BTC-USD")
    try:
        cpu, waited = server.cpu_seconds(), server.runqueue_seconds()
        started = time.monotonic()
        client = [PY, str(ROOT / "docs" / "benchmark_posts.py"), str(server.port)]
        client += ["--token", TOKEN, "--connections", str(connections)]
        client += ["--warmup", "3", "--duration", str(duration)]
        out = subprocess.run(
            ["taskset", "-c", "1", *client], capture_output=True, text=True, timeout=duration + 60
        )
        if out.returncode != 0:
            raise RuntimeError(f"posts client failed: {out.stderr[-2000:]}")
        spent = time.monotonic() - started
        server_cpu = (server.cpu_seconds() - cpu) / spent
        server_waited = (server.runqueue_seconds() - waited) / spent
        report: dict[str, Any] = json.loads(out.stdout)
        grouped = None
        if kind != REFERENCE:
            with urllib.request.urlopen(server.base + "/metrics", timeout=10) as answer:
                text = answer.read().decode()
            found = {
                line.split()[0]: float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("ticker_log_append_")
            }
            groups = found.get("ticker_log_append_groups_total")
            if groups:
                grouped = round(found["ticker_log_append_batches_total"] / groups, 1)
    finally:
        server.stop()
    database = db_url.split(":", 1)[0].split("+")[0] if db_url else "none"
    return {
        "server": kind,
        "log": database,
        "connections": connections,
        "requests/s": report["requests/s"],
        "p50 ms": report["p50 ms"],
        "p99 ms": report["p99 ms"],
        "max ms": report["max ms"],
        "errors": report["errors"],
        "batches/transaction": grouped,
        "server CPU %": round(server_cpu * 100),
        # Runnable but not running: core 0 was busy with something else (noise).
        "server waited for core %": round(server_waited * 100),
        "client CPU %": report["client CPU %"],
    }


def whole_machine(tmp: Path, streams: int, workers: int, processes: int) -> dict[str, Any]:
    """Many concurrent streams on the whole machine: several workers, several source addresses."""
    server = Server(SERVE, sqlite_url(tmp, "many"), workers=workers, cpus=None,
                    symbols="BTC-USD", max_streams=streams)  # fmt: skip
    results: list[dict[str, Any]] = []
    try:
        per = streams // processes

        def one(n: int) -> None:
            results.append(
                loadtest(
                    server,
                    cpus="0,1",
                    clients=per,
                    symbols="BTC-USD",
                    rate=1,
                    duration=10,
                    source_addresses=f"127.0.0.{2 + 2 * n},127.0.0.{3 + 2 * n}",
                    connect_rate=250,  # 1,000 new streams a second in all
                )
            )

        threads = [threading.Thread(target=one, args=(n,)) for n in range(processes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    return {
        "streams asked": streams,
        "workers": workers,
        "connected": sum(r["connected"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "lost/dup/reordered": "/".join(
            str(sum(r[k] for r in results)) for k in ("lost", "duplicated", "reordered")
        ),
        "p99 ms (worst process)": max(r["latency_ms"]["p99"] or 0 for r in results),
    }


def machine_speed() -> str:
    """Time a plain Python loop on each core: this VM's speed drifts from day to day."""
    loop = "import time\nt = time.perf_counter()\nfor _ in range(5_000_000): pass\n"
    loop += "print(round((time.perf_counter() - t) / 5_000_000 * 1e9, 1))"
    speeds = []
    for core in ("0", "1"):
        out = subprocess.run(
            ["taskset", "-c", core, PY, "-c", loop], capture_output=True, text=True
        )
        speeds.append(f"core {core} {out.stdout.strip()} ns")
    return "empty Python loop per iteration: " + ", ".join(speeds)


def add_ratios(rows: list[dict[str, Any]], figures: list[str], same: list[str]) -> None:
    """Give each row's ``figures`` as a ratio to the ``ticker serve`` row of the same load.

    ``same`` names the columns that make a load; the ratio of a plain
    ``gunicorn wsgi:app`` row is the one issue 12 asks to be within 10 % (0.90 to 1.10).
    """
    for row in rows:
        load = [row[k] for k in same]
        serve = next(r for r in rows if r["server"] == SERVE and [r[k] for k in same] == load)
        for figure in figures:
            mine, base = row[figure], serve[figure]
            row[f"{figure} ÷ serve"] = round(mine / base, 2) if mine and base else None


def show(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {title}\n")
    if not rows:
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join("-" if row[k] is None else str(row[k]) for k in keys) + " |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, smaller counts")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(SECTIONS))
    args = parser.parse_args()
    everything = set(SECTIONS)
    only = set(filter(None, args.only.split(","))) or everything
    quick = args.quick
    with open("/proc/cpuinfo") as info:
        model = next((ln.split(":", 1)[1].strip() for ln in info if "model name" in ln), "?")
    print(f"# ticker benchmark, {time.strftime('%Y-%m-%d')}")
    print(
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {platform.system()}"
    )
    print(machine_speed())
    tmp = Path(tempfile.mkdtemp(prefix="ticker-bench-"))
    try:
        if "fanout" in only:
            duration = 10 if quick else 30
            plans = [(1000, 10), (10000, 10), (1000, 200)]
            rows = [fanout(tmp, kind, c, r, duration) for c, r in plans for kind in KINDS]
            add_ratios(rows, ["server CPU µs/event", "p99 ms"], same=["clients", "ticks/s"])
            show("Fan-out (1 worker on core 0; client on core 1)", rows)
        if "rss" in only:
            n = 2000 if quick else 10000
            rows = [idle_rss(tmp, kind, n) for kind in KINDS]
            add_ratios(rows, ["KiB/stream"], same=[])
            show("Idle streams (1 worker)", rows)
        if "log" in only:
            total = 50_000 if quick else 500_000
            rows = [post_and_replay(sqlite_url(tmp, "log"), total)]
            pg = postgres_url("ticker_bench")
            if pg:
                rows.append(post_and_replay(pg, total))
            show("The log: appends and replay (1 worker on core 0)", rows)
        if "post" in only:
            total = 50_000 if quick else 500_000
            rows = []
            # The rollup job shares the worker's core: also measured with it off.
            off = {"rollup_interval": 86400}
            plans = [(False, {}), (False, off), (True, {}), (True, off)]
            for sized, config in plans:
                url = sqlite_url(tmp, "post")
                rows.append(post_and_replay(url, total, sized, replay=False, **config))
                pg = postgres_url("ticker_bench")
                if pg:
                    rows.append(post_and_replay(pg, total, sized, replay=False, **config))
            show("Appends alone (1 worker on core 0)", rows)
        if "posts" in only:
            duration = 10 if quick else 20
            rows = [single_posts(REFERENCE, "", duration)]
            rows.append(single_posts(SERVE, sqlite_url(tmp, "posts"), duration))
            pg = postgres_url("ticker_bench")
            if pg:
                rows.append(single_posts(SERVE, pg, duration))
            base = rows[0]
            for row in rows:
                for figure in ("requests/s", "p99 ms"):
                    mine, ref = row[figure], base[figure]
                    row[f"{figure} ÷ reference"] = round(mine / ref, 2) if mine and ref else None
            show(
                "Single-tick POSTs, 32 keep-alive connections (1 worker, core 0; client, core 1)",
                rows,
            )
        if "candles" in only:
            import benchmark_market  # docs/, beside this script

            benchmark_market.run(tmp, quick, sqlite_url, postgres_url, show)
        if "storm" in only:
            import benchmark_storm  # docs/, beside this script

            benchmark_storm.run(tmp, quick, sqlite_url, postgres_url, Server, PY, TOKEN, show)
        if "watchlists" in only:
            import benchmark_watchlists as lists  # docs/, beside this script

            def tracking_500(name: str) -> Server:
                return Server(
                    SERVE, sqlite_url(tmp, name), symbols=",".join(lists.SYMBOLS), max_streams=20000
                )

            lists.run(tmp, quick, tracking_500, loadtest, show)
        if "machine" in only:
            n = 8000 if quick else 40000
            show("Whole machine", [whole_machine(tmp, n, workers=4, processes=4)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
