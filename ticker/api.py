"""The JSON API: symbols, snapshot, pages of the log, publishing; health and metrics."""

from __future__ import annotations

import logging
import os

from flask import Blueprint, Response, g, jsonify, request

from ticker import candles, lease, lifecycle, log, market, params, publish
from ticker.errors import RequestError, error_response
from ticker.events import format_ts, now_us
from ticker.sources import Source
from ticker.state import app_state

bp = Blueprint("api", __name__)
logger = logging.getLogger(__name__)

MAX_PAGE = 1000


@bp.get("/api/symbols")
def list_symbols() -> Response:
    """List the tracked symbols with their latest tick, 24-hour statistics and staleness.

    A symbol whose market is closed (the source's clock says so) is ``closed``,
    and never ``stale``.
    """
    state = app_state()
    settings = state.settings
    symbols = settings.symbols
    closed = _closed_symbols(state.producer.source)
    candles.catch_up(state.engine)
    now = now_us()
    with candles.reading(state.engine) as conn:
        latest = {e.symbol: e for e in log.latest(conn, symbols)}
        stats = candles.day_stats(conn, symbols, now)
    rows = []
    for symbol in symbols:
        tick = latest.get(symbol)
        rows.append(
            {
                "symbol": symbol,
                "tick": None if tick is None else tick.to_dict(),
                "stats": candles.stats_json(stats[symbol]),
                "stale": symbol not in closed
                and market.is_stale(None if tick is None else tick.ts, settings.tick_interval, now),
                "closed": symbol in closed,
            }
        )
    return jsonify({"symbols": rows})


def _closed_symbols(source: Source | None) -> frozenset[str]:
    """Return the symbols whose market is closed, as the source knows; none if it fails."""
    if source is None:
        return frozenset()
    try:
        return source.closed_symbols()
    except Exception:
        logger.exception("the source could not say which markets are closed")
        return frozenset()


@bp.get("/api/snapshot")
def snapshot() -> Response:
    """Return the head and the latest tick of each chosen symbol, from one snapshot."""
    state = app_state()
    symbols = params.symbols(request.args.get("symbols"), state.settings)
    with state.engine.connect() as conn:
        position = log.position(conn)
        ticks = [e.to_dict() for e in log.latest(conn, symbols, upto=position.head)]
    return jsonify({"head": position.head, "ticks": ticks})


@bp.get("/api/ticks")
def list_ticks() -> Response:
    """Return a page of one symbol's events after an id (or the newest before one), in id order."""
    settings = app_state().settings
    raw_symbol = request.args.get("symbol")
    if raw_symbol is None or not raw_symbol.strip():
        raise RequestError(400, "symbol is required, e.g. ?symbol=BTC-USD")
    symbol = params.symbols(raw_symbol, settings)
    if len(symbol) != 1:
        raise RequestError(400, "give exactly one symbol")
    after = params.event_id(request.args.get("after"), "after") or 0
    before = params.event_id(request.args.get("before"), "before")
    limit = params.limit(request.args.get("limit"), 100, MAX_PAGE)
    if before is not None:
        with app_state().engine.connect() as conn:
            newest = log.read_before(conn, symbol[0], after, before, limit)
        next_before = newest[0].id if len(newest) == limit else None
        return jsonify({"ticks": [e.to_dict() for e in newest], "next_before": next_before})
    with app_state().engine.connect() as conn:
        found = log.read_after(conn, after, symbol, limit)
    next_after = found[-1].id if len(found) == limit else None
    return jsonify({"ticks": [e.to_dict() for e in found], "next_after": next_after})


@bp.post(publish.PATH)
def publish_ticks() -> Response:
    """Append a tick or a list of ticks from an outside producer, all or nothing.

    Answered in front of Flask by :func:`ticker.publish.publishing`, which
    ``create_app`` installs; this rule keeps the URL map whole (the CORS
    preflight and a 405 list the methods from it), and serves the same answer
    to an app whose ``wsgi_app`` was wrapped without it.
    """
    status, body = publish.answer(
        app_state(),
        request.get_data(cache=False),
        request.headers.get("Authorization"),
        g.request_id,
        request.remote_addr,
    )
    return Response(body, status=status, mimetype="application/json")


def _iso_s(seconds: float | None) -> str | None:
    return None if seconds is None else format_ts(int(seconds * 1_000_000))


@bp.get("/healthz")
def health() -> tuple[Response, int]:
    """Report whether the database answers, the head, the producer and the newest tick's age."""
    state = app_state()
    producer, streams, settings = state.producer, state.streams, state.settings
    try:
        # Starting the follower reads the log, so it may fail too.
        lifecycle.start_on_request(state, request.environ)
        with state.engine.connect() as conn:
            position = log.position(conn)
            holder = lease.current(conn)
            newest = log.latest_any(conn)
    except Exception as exc:
        return error_response(503, f"database unavailable: {type(exc).__name__}"), 503
    now = now_us()
    source = producer.source
    _closed_symbols(source)  # a venue with trading hours asks its clock when due
    writes = state.writes
    return jsonify(
        {
            # Degraded: reads and streams work, appends do not (the cause is under "writes").
            "status": "degraded" if writes.failing else "ok",
            "writes": {
                "ok": not writes.failing,
                "cause": writes.cause,
                "failing_since": _iso_s(writes.failing_since),
                "failed_appends": writes.failed,
            },
            "head": position.head,
            "pruned_through": position.pruned_through,
            "newest_tick_age_s": None if newest is None else round((now - newest.ts) / 1e6, 3),
            "producer": {
                "mode": settings.producer,
                "source": settings.source,
                "holder": None if holder is None or holder[1] <= now else holder[0],
                "this_process": producer.state.leader,
                **producer.health(),
                "upstream": None if source is None else source.health.report(),
            },
            "streams": {  # this worker's
                "worker_pid": os.getpid(),  # which worker answered
                "hub_head": state.hub.head,  # how far this process's follower has read
                "open": streams.open,
                "limit": streams.limit,
                "sent": streams.sent,
                "replayed": streams.replayed,
                "resets": streams.resets,
                "fallbacks": streams.fallbacks,
                # Served by the broadcaster (gunicorn's gevent worker with ticker's settings).
                "broadcaster": state.broadcaster.running,
                "parked": state.broadcaster.parked,
            },
        }
    ), 200


@bp.get("/metrics")
def metrics() -> Response:
    """Render the Prometheus metrics of every worker, and the log's, as text."""
    state = app_state()
    state.streams.flush()  # this worker's latest counts
    body, content_type = state.metrics.render(request.headers.get("Accept"))
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response
