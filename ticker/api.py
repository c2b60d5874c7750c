"""The JSON API: symbols, snapshot, pages of the log, publishing; health and metrics."""

from __future__ import annotations

import hmac
import json
import logging
import os
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy.exc import OperationalError

from ticker import candles, lease, lifecycle, log, market, params
from ticker.config import SYMBOL_GRAMMAR, Settings, normalise_symbol
from ticker.errors import RequestError, error_response
from ticker.events import Event, Tick, exact_price, exact_size, format_ts, now_us, parse_ts
from ticker.sources import Source
from ticker.state import app_state

bp = Blueprint("api", __name__)
logger = logging.getLogger(__name__)

MAX_PAGE = 1000
MAX_BATCH = 10_000


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


def _check_token(settings: Settings) -> None:
    if settings.publish_token is None:
        raise RequestError(403, "publishing is disabled: set TICKER_PUBLISH_TOKEN to enable it")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.publish_token.encode()
    ):
        # Say that it failed and from where, never what was sent.
        logger.warning(
            "publish refused: missing or wrong bearer token",
            extra={"request_id": g.request_id, "remote": request.remote_addr},
        )
        raise RequestError(401, "missing or wrong bearer token")


def _tick(item: Any, index: int, settings: Settings, received_us: int) -> Tick:
    def bad(field: str, message: str, status: int = 422) -> RequestError:
        return RequestError(status, f"item {index}: {field} {message}", index=index, field=field)

    if not isinstance(item, dict):
        raise bad("tick", "must be an object with symbol, price and optional ts and size", 400)
    unexpected = sorted(set(item) - {"symbol", "price", "ts", "size"})
    if unexpected:
        raise bad(unexpected[0], "is not a tick field (symbol, price, ts, size)")
    raw_symbol = item.get("symbol")
    if not isinstance(raw_symbol, str):
        raise bad("symbol", "is required and must be a string")
    try:
        symbol = normalise_symbol(raw_symbol)
    except ValueError:
        raise bad("symbol", f"{raw_symbol[:40]!r} is malformed: {SYMBOL_GRAMMAR}", 400) from None
    if symbol not in settings.symbols:
        raise bad("symbol", f"{symbol!r} is not tracked")
    raw_price = item.get("price")
    if raw_price is None:
        raise bad("price", 'is required: a decimal string such as "67012.35"')
    try:
        price = exact_price(raw_price)
    except ValueError as exc:
        raise bad("price", str(exc)) from None
    ts = received_us
    raw_ts = item.get("ts")
    if raw_ts is not None:
        if not isinstance(raw_ts, str):
            raise bad("ts", 'must be an ISO 8601 string such as "2026-11-21T10:00:00Z"')
        try:
            ts = parse_ts(raw_ts)
        except ValueError as exc:
            raise bad("ts", f"{raw_ts[:40]!r} is not ISO 8601 with a zone ({exc})") from None
    size = None
    raw_size = item.get("size")
    if raw_size is not None:
        try:
            size = exact_size(raw_size)
        except ValueError as exc:
            raise bad("size", str(exc)) from None
    return Tick(symbol, price, ts, size)


@bp.post("/api/ticks")
def publish() -> tuple[Response, int]:
    """Append a tick or a list of ticks from an outside producer, all or nothing."""
    settings = app_state().settings
    _check_token(settings)
    try:
        body = json.loads(request.get_data(cache=False), parse_float=Decimal, parse_int=Decimal)
    except RecursionError:
        raise RequestError(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    items = body if isinstance(body, list) else [body]
    if not items:
        raise RequestError(400, "the body is an empty list: send at least one tick")
    if len(items) > MAX_BATCH:
        raise RequestError(413, f"too many ticks in one request: {len(items)}, at most {MAX_BATCH}")
    received = now_us()
    batch = [_tick(item, i, settings, received) for i, item in enumerate(items)]
    state = app_state()
    try:
        before, ids = log.append_after(state.engine, batch)
    except OperationalError as exc:  # nothing of the batch committed
        cause = str(exc.orig).strip() or type(exc.orig).__name__
        state.writes.failure(cause)
        state.metrics.append_failures.inc()
        logger.warning("append failed: %s", cause)
        raise RequestError(503, f"database unavailable, retry shortly: {cause}") from None
    state.writes.success()
    # Straight to this process's hub when nothing else committed in between;
    # else (or as well, for the other processes) the follower reads the log.
    events = [Event(i, t.symbol, t.price, t.ts, t.size) for i, t in zip(ids, batch, strict=True)]
    if not state.follower.published(before, events):
        state.follower.wake()
    logger.debug(
        "published",
        extra={"request_id": g.request_id, "count": len(ids), "first": ids[0], "last": ids[-1]},
    )
    return jsonify({"ids": ids}), 201


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
