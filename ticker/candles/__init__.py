"""OHLCV candles rolled up from the log, kept after the raw ticks are pruned.

- :mod:`~ticker.candles.aggregate`: the exact fold and merge of buckets (pure).
- :mod:`~ticker.candles.store`: the ``candles`` table, the rollup and its watermark,
  candle retention.
- :mod:`~ticker.candles.query`: candles of a range and the rolling 24-hour statistics,
  stored rows merged with the events not rolled up yet.
"""

from __future__ import annotations

from ticker.candles.aggregate import INTERVALS, WIDTHS, Candle, bucket
from ticker.candles.query import Window, candle_json, day_stats, read, stats_json
from ticker.candles.store import CandleRow, catch_up, fold_through, prune, reading, rollup

__all__ = [
    "INTERVALS",
    "WIDTHS",
    "Candle",
    "CandleRow",
    "Window",
    "bucket",
    "candle_json",
    "catch_up",
    "day_stats",
    "fold_through",
    "prune",
    "read",
    "reading",
    "rollup",
    "stats_json",
]
