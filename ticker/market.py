"""The market-data API: OHLCV candles of one symbol, from the candles and the log."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from ticker import candles, params
from ticker.candles.aggregate import US
from ticker.errors import RequestError
from ticker.events import now_us, parse_ts
from ticker.state import app_state

bp = Blueprint("market", __name__)

MAX_CANDLES = 1000
DEFAULT_CANDLES = 500
DEFAULT_INTERVAL = "1m"


def _time(name: str) -> int | None:
    """Return the query parameter ``name`` as microseconds (a time without zone is UTC)."""
    raw = request.args.get(name)
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parse_ts(parsed.isoformat())
    except (ValueError, OverflowError) as exc:
        raise RequestError(
            400,
            f"{name} must be an ISO 8601 time such as 2026-11-21T10:00:00Z, got {text[:40]!r}"
            f" ({exc}; write + as %2B in a URL)",
            parameter=name,
        ) from None


@bp.get("/api/candles")
def list_candles() -> Response:
    """Return one symbol's candles of an interval, oldest first, with the forming one."""
    state = app_state()
    raw_symbol = request.args.get("symbol")
    if raw_symbol is None or not raw_symbol.strip():
        raise RequestError(400, "symbol is required, e.g. ?symbol=BTC-USD", parameter="symbol")
    chosen = params.symbols(raw_symbol, state.settings)
    if len(chosen) != 1:
        raise RequestError(400, "give exactly one symbol", parameter="symbol")
    interval = (request.args.get("interval") or DEFAULT_INTERVAL).strip()
    width = candles.INTERVALS.get(interval)
    if width is None:
        raise RequestError(
            400,
            f"unknown interval {interval[:20]!r}: choose one of {', '.join(candles.INTERVALS)}",
            parameter="interval",
            intervals=list(candles.INTERVALS),
        )
    start = _time("start")
    end = _time("end")
    if end is None:
        end = now_us()
    if start is not None and start >= end:
        raise RequestError(400, "start must be before end", parameter="start")
    limit = params.limit(request.args.get("limit"), DEFAULT_CANDLES, MAX_CANDLES)
    candles.catch_up(state.engine)
    with candles.reading(state.engine) as conn:
        found = candles.read(conn, chosen[0], width, start, end, limit)
    return jsonify(
        {
            "symbol": chosen[0],
            "interval": interval,
            "candles": [candles.candle_json(c) for c in found],
        }
    )


def stale_after(tick_interval: float) -> float:
    """Return how old, in seconds, a symbol's newest tick may be before it is stale."""
    return max(5 * tick_interval, 10.0)


def is_stale(newest_ts: int | None, tick_interval: float, now: int) -> bool:
    """Tell whether a symbol whose newest tick has ``newest_ts`` has stopped ticking."""
    return newest_ts is None or now - newest_ts > stale_after(tick_interval) * US
