"""ticker: a stock/crypto ticker on a replayable event log, streamed as SSE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from ticker import api, db, views
from ticker.config import load_settings
from ticker.errors import RequestError, error_response
from ticker.follower import Follower
from ticker.hub import Hub
from ticker.producer import Producer
from ticker.stream import Streams

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
    follower = Follower(engine, hub, settings.poll_interval)
    app.extensions["ticker.hub"] = hub
    app.extensions["ticker.follower"] = follower
    app.extensions["ticker.producer"] = Producer(engine, settings, on_append=follower.wake)
    app.extensions["ticker.streams"] = Streams(settings.max_streams)

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    _register_errors(app)
    _register_cors(app, settings.cors_origins)
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


def _register_cors(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return

    @app.after_request
    def allow_origin(response: Any) -> Any:
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin.rstrip("/") in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Last-Event-ID"
            )
            response.headers.add("Vary", "Origin")
        return response
