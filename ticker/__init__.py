"""ticker: a stock/crypto ticker on a replayable event log, streamed as SSE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from ticker import api, db, headers, stream, views, wire
from ticker.config import load_settings
from ticker.errors import RequestError, error_response
from ticker.follower import Follower
from ticker.hub import PULSES_PER_HEARTBEAT, Hub
from ticker.metrics import MeteredProducer, MeteredStreams, Metrics

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: load and check config, set up the extensions, blueprints, errors."""
    app = Flask(
        __name__,
        instance_path=str(ROOT / "instance"),
        template_folder=str(ROOT / "templates"),
    )
    default_url = f"sqlite:///{Path(app.instance_path) / 'ticker.db'}"
    settings = load_settings(default_url, overrides=test_config)
    if settings.database_url == default_url:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["ticker.settings"] = settings

    db.init_app(app, settings.database_url)
    engine = db.get_engine(app)
    hub = Hub(settings.hub_capacity)
    metrics = Metrics(engine)
    streams = MeteredStreams(settings.max_streams, metrics)
    follower = Follower(
        engine,
        hub,
        settings.poll_interval,
        symbols=settings.symbols,
        pulse_interval=settings.heartbeat / PULSES_PER_HEARTBEAT,
        on_pulse=lambda: streams.on_pulse(stream.write_timeout(settings.heartbeat)),
    )
    app.extensions["ticker.hub"] = hub
    app.extensions["ticker.follower"] = follower
    app.extensions["ticker.metrics"] = metrics
    app.extensions["ticker.producer"] = MeteredProducer(
        engine, settings, on_append=follower.wake, metrics=metrics
    )
    app.extensions["ticker.streams"] = streams

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    _register_errors(app)
    headers.init_app(app, settings.cors_origins)
    app.wsgi_app = wire.taking_over(app.wsgi_app)  # type: ignore[method-assign,assignment]
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> Any:
        return error_response(exc.status, exc.message, **exc.details)

    @app.errorhandler(OperationalError)
    def database_down(exc: OperationalError) -> Any:
        app.logger.warning("database unavailable: %s", exc.orig)
        return error_response(503, "database unavailable, retry shortly")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return error_response(exc.code or 500, exc.description or exc.name)
