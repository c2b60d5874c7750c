"""The producer's upkeep jobs: roll the log up into candles, then apply retention.

Invariant: only the lease holder runs them.  Each rollup step moves the
watermark in the same write transaction that writes the candles, and each
prune batch rolls up the events it deletes in its own transaction first
(``log.prune``), so a crash at any point loses nothing from the candles and
counts nothing twice.  Candles are kept per ``TICKER_CANDLE_RETENTION``,
independently of the raw ticks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from ticker import candles, log
from ticker.candles.recent import RecentEvents
from ticker.config import Settings
from ticker.events import now_us

if TYPE_CHECKING:
    from ticker.producer import ProducerState

logger = logging.getLogger("ticker.producer")


class Upkeep:
    """Rollup and prune, run by the producer while it holds the lease."""

    engine: Engine
    settings: Settings
    state: ProducerState
    recent: RecentEvents | None  # the follower's latest events, when this process has one
    on_append: Callable[[], None]  # wakes this process's follower

    def on_error(self, stage: str) -> None:
        """Note a failure: ``source``, ``run`` (e.g. the database), ``rollup`` or ``prune``."""

    def on_pruned(self, count: int) -> None:
        """Note ``count`` events deleted by retention."""

    def rollup(self) -> int:
        """Roll the new events into the candles if this process is the producer; return how many."""
        if self.recent is not None and not self.state.leader:
            self.recent.keep(False)  # the lease moved: another process rolls up
        if not self.state.leader:
            return 0
        try:
            done = candles.rollup(self.engine, recent=self.recent)
        except Exception:
            logger.exception("rolling the log up into candles failed")
            self.on_error("rollup")
            return 0
        self.state.rolled_up += done
        return done

    def prune(self) -> int:
        """Apply both retentions if this process is the producer; return the events deleted."""
        if not self.state.leader:
            return 0
        try:
            deleted = prune_all(self.engine, self.settings, self.recent)
        except Exception:
            logger.exception("pruning the log failed")
            self.on_error("prune")
            return 0
        if deleted:
            self.on_append()  # the hub learns the new horizon now, not at the next poll
            logger.info("pruned %d events", deleted)
            self.state.pruned += deleted
            self.on_pruned(deleted)
        return deleted


def prune_all(engine: Engine, settings: Settings, recent: RecentEvents | None = None) -> int:
    """Roll up, prune the events and then the old candles; return the events deleted."""
    now = now_us()
    candles.rollup(engine, recent=recent)  # so the prune below has little left to roll up
    deleted = log.prune(engine, settings.retention, now)
    gone = candles.prune(engine, dict(settings.candle_retention), now)
    if gone:
        logger.info("pruned %d candles", gone)
    return deleted
