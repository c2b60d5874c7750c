"""The ``ticker`` command: serve, db upgrade, produce, prune."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

import click
from alembic import command
from alembic.config import Config
from flask import Flask

from ticker import ROOT, create_app, log
from ticker.background import make_scheduler
from ticker.config import Settings
from ticker.db import get_engine
from ticker.errors import ConfigError
from ticker.events import now_us


def configure_logging() -> None:
    """Log one line per record to stderr; ``TICKER_LOG_LEVEL`` sets the level."""
    logging.basicConfig(
        level=os.environ.get("TICKER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _app() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None


def alembic_config(database_url: str) -> Config:
    """Return the Alembic config of the project, pointed at ``database_url``."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(app: Flask, revision: str = "head") -> None:
    """Bring the app's database to ``revision``."""
    settings: Settings = app.extensions["ticker.settings"]
    command.upgrade(alembic_config(settings.database_url), revision)


@click.group()
def main() -> None:
    """Run and operate ticker. Configuration comes from TICKER_* variables."""
    configure_logging()


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION (default: head)."""
    upgrade(_app(), revision)


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
    """Migrate the database, then serve the page, stream and API under gunicorn."""
    upgrade(_app())
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
def produce() -> None:
    """Run the producer alone (for TICKER_PRODUCER=off on the web tier)."""
    app = _app()
    settings: Settings = app.extensions["ticker.settings"]
    if settings.source == "none":
        raise click.ClickException("TICKER_SOURCE=none: there is nothing to produce")
    producer = app.extensions["ticker.producer"]
    done = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler = make_scheduler()
    producer.schedule(scheduler)
    scheduler.start()
    click.echo(f"producing {settings.source} ticks every {settings.tick_interval}s", err=True)
    done.wait()
    scheduler.shutdown()
    producer.release()


@main.command()
def prune() -> None:
    """Delete the events beyond TICKER_RETENTION now."""
    app = _app()
    settings: Settings = app.extensions["ticker.settings"]
    deleted = log.prune(get_engine(app), settings.retention, now_us())
    click.echo(f"pruned {deleted} events")


if __name__ == "__main__":
    main()
