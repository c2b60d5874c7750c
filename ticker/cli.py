"""The ``ticker`` command: serve, db upgrade, produce, prune."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

import click

from ticker import ROOT, logsetup
from ticker.config import app_settings, load_log_settings
from ticker.errors import ConfigError

# The app, SQLAlchemy and Alembic are imported by the commands that use them:
# ``ticker serve`` only hands over to gunicorn, and a deploy waits for it.
if TYPE_CHECKING:
    from alembic.config import Config
    from flask import Flask
    from sqlalchemy import Engine


MIGRATIONS = ROOT / "migrations"  # Alembic's scripts


def _app() -> Flask:
    from ticker import create_app

    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None


def alembic_config(database_url: str) -> Config:
    """Return the Alembic config of the project, pointed at ``database_url``."""
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False  # keep our one-line log format
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def at_head(engine: Engine, lock_wait_ms: int = 200) -> bool:
    """Tell whether the database of ``engine`` is at this code's newest migration.

    False as well when it cannot tell: the database does not answer, has no
    schema yet, or on PostgreSQL a migration holds the schema's version longer
    than ``lock_wait_ms``.  Reads only (Alembic's own version table).
    """
    from alembic.script import ScriptDirectory
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_wait_ms)}"))
            current = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except SQLAlchemyError:
        return False
    return current == heads


def upgrade(app: Flask, revision: str = "head") -> None:
    """Bring the app's database to ``revision``."""
    from ticker.state import app_state

    migrate(app_state(app).settings.database_url, revision)


@click.group()
def main() -> None:
    """Run and operate ticker. Configuration comes from TICKER_* variables."""
    try:
        logsetup.configure(load_log_settings())
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION (default: head)."""
    try:
        url = app_settings().database_url
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None
    migrate(url, revision)  # not the whole app: gunicorn's master waits for this


@main.command()
@click.option(
    "--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="HOST or 127.0.0.1"
)
@click.option(
    "--port",
    default=lambda: int(os.environ.get("PORT", "8000")),
    type=int,
    show_default="PORT or 8000",
)
@click.option(
    "--workers",
    type=int,
    default=lambda: int(os.environ.get("WEB_CONCURRENCY", max(2, os.cpu_count() or 1))),
    show_default="WEB_CONCURRENCY or the number of cores (at least 2)",
)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the page, stream and API under gunicorn, with ticker's gunicorn settings.

    The same as ``gunicorn wsgi:app`` in the checkout: gunicorn's master
    migrates the database before the workers start (``gunicorn_conf``).
    """
    try:
        app_settings()  # a bad variable stops here, with its name, before gunicorn starts
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:ticker.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "ticker:create_app()",
    ]
    click.echo(f"serving on http://{host}:{port} with {workers} workers", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


@main.command()
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve the producer's Prometheus metrics on this port (default: none).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for the metrics."
)
def produce(metrics_port: int | None, metrics_host: str) -> None:
    """Run the producer, its rollup and prune alone (for TICKER_PRODUCER=off on the web tier)."""
    from ticker.lifecycle import make_scheduler
    from ticker.state import app_state

    app = _app()
    state = app_state(app)
    settings, producer = state.settings, state.producer
    done = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        registry = state.metrics.registry
        start_http_server(metrics_port, addr=metrics_host, registry=registry)
        click.echo(f"metrics on http://{metrics_host}:{metrics_port}/metrics", err=True)
    scheduler = make_scheduler()
    producer.schedule(scheduler)
    scheduler.start()
    if settings.source == "none":
        click.echo("TICKER_SOURCE=none: rolling up candles and pruning only", err=True)
    else:
        click.echo(f"producing {settings.source} ticks every {settings.tick_interval}s", err=True)
    done.wait()
    scheduler.shutdown()
    producer.release()


@main.command()
def prune() -> None:
    """Roll up into candles, then delete what TICKER_RETENTION and _CANDLE_RETENTION drop."""
    from ticker.state import app_state
    from ticker.upkeep import prune_all

    state = app_state(_app())
    deleted = prune_all(state.engine, state.settings)
    click.echo(f"pruned {deleted} events")


@main.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The deployment.")
@click.option("--clients", default=100, show_default=True, help="Concurrent streams to open.")
@click.option("--symbols", default="", help="Symbols to use (default: all the server tracks).")
@click.option("--per-client", default=1, show_default=True, help="Symbols each stream asks for.")
@click.option(
    "--watchlists",
    type=click.Choice(["rotating", "random", "shared"]),
    default="rotating",
    show_default=True,
    help="Which symbols each stream asks for: consecutive ones from the i-th, its own random "
    "draw, or the same for all (spread evenly over --symbols).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the random watchlists.")
@click.option("--duration", default=10.0, show_default=True, help="Seconds to measure.")
@click.option("--rate", default=0.0, show_default=True, help="Ticks/s to publish (0: none).")
@click.option(
    "--batch",
    default=0,
    show_default=True,
    help="Ticks per POST, the rate still in ticks/s (0: one per POST, late ones merged).",
)
@click.option("--token", envvar="TICKER_PUBLISH_TOKEN", help="Publish token.")
@click.option("--source-addresses", default="", help="Local addresses to spread clients over.")
@click.option("--connect-rate", default=0.0, help="New streams per second (0: all at once).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def loadtest(
    url: str,
    clients: int,
    symbols: str,
    per_client: int,
    watchlists: str,
    seed: int,
    duration: float,
    rate: float,
    batch: int,
    token: str | None,
    source_addresses: str,
    connect_rate: float,
    as_json: bool,
) -> None:
    """Open many streams (and publish ticks) against a deployment; report delivery and latency.

    Exits 1 when any client lost, duplicated or reordered a tick, or got one of
    another symbol.
    """
    import json
    import resource
    import urllib.request

    try:
        import uvloop
    except ImportError:
        raise click.ClickException(
            "ticker loadtest needs uvloop, which the server does not: "
            "pip install 'ticker[load]' (or pip install uvloop)"
        ) from None

    from ticker import loadtest as load

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not chosen:
        with urllib.request.urlopen(url.rstrip("/") + "/api/symbols", timeout=10) as answer:
            chosen = [row["symbol"] for row in json.load(answer)["symbols"]]
    sources = [a.strip() for a in source_addresses.split(",") if a.strip()]
    try:
        report = uvloop.run(
            load.run(
                url,
                clients,
                chosen,
                per_client,
                duration,
                rate,
                token,
                sources,
                connect_rate,
                on_phase=lambda name: print(f"phase: {name}", file=sys.stderr, flush=True),
                kind=watchlists,
                seed=seed,
                batch=batch,
            )
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, indent=2) if as_json else load.render(report))
    if report["lost"] or report["duplicated"] or report["reordered"] or report["unexpected"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
