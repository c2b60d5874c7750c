"""The app factory: load and check config, build the app's state, blueprints, errors."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from ticker import ROOT, api, headers, market, views
from ticker.candles.recent import RecentEvents
from ticker.config import INSTANCE, Settings, app_settings
from ticker.db import make_engine, make_stream_engine
from ticker.errors import RequestError, error_response
from ticker.events import Event
from ticker.follower import Follower
from ticker.hub import PULSES_PER_HEARTBEAT, Hub
from ticker.log.group import GroupCommit
from ticker.metrics import MeteredProducer, MeteredStreams, Metrics
from ticker.publish import MAX_BODY, publishing
from ticker.state import KEY, AppState
from ticker.stream import Broadcaster, taking_over, write_timeout


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: load and check config, build its state, blueprints, errors, headers."""
    app = Flask("ticker", instance_path=str(INSTANCE), template_folder=str(ROOT / "templates"))
    settings = app_settings(test_config)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[KEY] = build_state(settings)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(market.bp)
    _register_errors(app)
    headers.init_app(app)
    app.wsgi_app = taking_over(app.wsgi_app)  # type: ignore[method-assign,assignment]
    app.wsgi_app = publishing(app.wsgi_app, app.extensions[KEY])  # type: ignore[method-assign,assignment]
    return app


def build_state(settings: Settings) -> AppState:
    """Build every stateful part of an app from its settings; nothing starts yet."""
    engine = make_engine(settings.database_url)
    stream_engine = make_stream_engine(settings.database_url, settings.stream_readers)
    hub = Hub(settings.hub_capacity, settings.hub_span)
    metrics = Metrics(engine)
    streams = MeteredStreams(settings.max_streams, metrics)
    max_block = write_timeout(settings.heartbeat)
    recent = RecentEvents()  # the follower's pages, for the rollup when this process produces
    follower = Follower(
        engine,
        hub,
        settings.poll_interval,
        symbols=settings.symbols,
        pulse_interval=settings.heartbeat / PULSES_PER_HEARTBEAT,
        on_pulse=lambda: streams.on_pulse(max_block),
        recent=recent,
        appending=lambda: appends.leading,
    )

    def hand_over(before: int, events: list[Event]) -> None:
        # Straight to this process's hub when nothing else committed in between;
        # else (or as well, for the other processes) the follower reads the log.
        if not follower.published(before, events):
            follower.wake()

    appends = GroupCommit(engine, on_commit=hand_over, on_group=metrics.on_append_group)
    return AppState(
        settings=settings,
        engine=engine,
        stream_engine=stream_engine,
        hub=hub,
        follower=follower,
        appends=appends,
        streams=streams,
        producer=MeteredProducer(
            engine, settings, on_append=follower.wake, recent=recent, metrics=metrics
        ),
        broadcaster=Broadcaster(stream_engine, hub, streams, settings.heartbeat),
        metrics=metrics,
        cors_origins=settings.cors_origins,
    )


def _register_errors(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> Any:
        return error_response(exc.status, exc.message, **exc.details)

    @app.errorhandler(OperationalError)
    def database_down(exc: OperationalError) -> Any:
        app.logger.warning("database unavailable: %s", exc.orig)
        return error_response(503, "database unavailable, retry shortly")

    @app.errorhandler(PoolTimeout)
    def no_connection(exc: PoolTimeout) -> Any:
        app.logger.warning("no database connection free: %s", exc)
        return error_response(503, "database busy: no connection came free, retry shortly")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return error_response(exc.code or 500, exc.description or exc.name)
