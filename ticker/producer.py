"""The producer: APScheduler jobs that append a source's ticks and prune the log.

Invariant: exactly one process produces.  Every interval each candidate opens a
write transaction, claims the producer lease in it and, only if it holds the
lease, appends that interval's ticks in the same transaction (see ``lease``).
A process that has just taken the lease over resumes the walk from the log's
latest prices, so a failover continues the series instead of restarting it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine

from ticker import lease, log
from ticker.config import Settings
from ticker.db import writing
from ticker.events import now_us
from ticker.source import Source, make_source

logger = logging.getLogger(__name__)


@dataclass
class ProducerState:
    """What ``/healthz`` reports about this process's producer."""

    holder: str
    leader: bool = False
    ticks: int = 0
    errors: int = 0
    last_tick_at: float | None = None
    last_error: str | None = None
    pruned: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Producer:
    """Run one interval of the source under the lease, and prune when leader."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        on_append: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.on_append = on_append
        self.source: Source | None = None
        if settings.source != "none":
            self.source = make_source(
                settings.source, settings.symbols, settings.tick_interval, settings.seed
            )
        self.state = ProducerState(holder=lease.new_holder_id())
        # The holder renews once per interval, so the lease must outlast a few.
        self.lease_ttl = max(settings.lease_ttl, 3 * settings.tick_interval)

    def produce(self) -> list[int]:
        """Claim the lease and, holding it, append one interval of ticks; return their ids."""
        with self.state.lock:  # APScheduler may overlap a slow run with the next
            try:
                ids = self._produce()
            except Exception as exc:
                self.state.errors += 1
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("producer run failed")
                return []
        if ids:
            self.on_append()
        return ids

    def _produce(self) -> list[int]:
        if not self.state.leader:
            with self.engine.connect() as conn:
                held = lease.current(conn)
            if held is not None and held[0] != self.state.holder and held[1] > now_us():
                return []
        with writing(self.engine) as conn:
            claim = lease.claim(conn, self.state.holder, self.lease_ttl, now_us())
            if claim is lease.Claim.TAKEN:
                if self.state.leader:
                    logger.warning("producer lease lost to another process")
                self.state.leader = False
                return []
            if claim is lease.Claim.ACQUIRED or not self.state.leader:
                logger.info("producer lease acquired by %s", self.state.holder)
                if self.source is not None:
                    self.source.resume(log.latest(conn, self.settings.symbols))
            self.state.leader = True
            if self.source is None:
                return []
            ids = log.insert_ticks(conn, self.source.next_ticks(now_us()))
        self.state.ticks += len(ids)
        self.state.last_tick_at = time.time()
        return ids

    def prune(self) -> int:
        """Apply ``TICKER_RETENTION`` if this process is the producer; return events deleted."""
        if not self.state.leader:
            return 0
        try:
            deleted = log.prune(self.engine, self.settings.retention, now_us())
        except Exception:
            logger.exception("pruning the log failed")
            return 0
        if deleted:
            logger.info("pruned %d events", deleted)
            self.state.pruned += deleted
        return deleted

    def release(self) -> None:
        """Give up the lease so another process takes over without waiting for it to lapse."""
        if self.state.leader:
            self.state.leader = False
            try:
                lease.release(self.engine, self.state.holder)
            except Exception:
                logger.exception("could not release the producer lease")

    def schedule(self, scheduler: BaseScheduler) -> None:
        """Add the produce and prune jobs to ``scheduler``."""
        interval = self.settings.tick_interval
        scheduler.add_job(
            self.produce,
            "interval",
            seconds=interval,
            id="produce",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
        )
        retention = self.settings.retention
        every = 60.0 if retention.max_age is None else min(60.0, max(1.0, retention.max_age / 10))
        scheduler.add_job(
            self.prune,
            "interval",
            seconds=every,
            id="prune",
            max_instances=1,
            coalesce=True,
        )
