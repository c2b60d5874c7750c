"""The producer: APScheduler jobs that append a source's ticks and prune the log.

Invariant: exactly one process produces, and a tick commits only in a write
transaction that also claimed or renewed the producer lease (see ``lease``).
No source code, and so no network wait, ever runs while that write lock is
held.  Each interval is three steps:

1. Take over, only when this process is not the holder and the lease is free
   or lapsed: a short write transaction claims the lease and reads the log's
   latest prices; the source then resumes from them, so a failover continues
   the series instead of restarting it.
2. Fetch ``source.next_ticks`` outside any transaction, in the holder only.
3. Append: a short write transaction renews the lease and inserts what step 2
   fetched only if this process held the lease without a break.  If another
   process holds it now, the ticks are dropped.  If another held it meanwhile
   and let it lapse (``ACQUIRED``), they are dropped too and the source
   resumes from the log, since the other may have produced in between.

A failing source never stops the job: the error is logged with its cause,
counted and shown in ``/healthz``, and fetching backs off (doubling per
failure in a row up to a minute, never sooner than a ``Retry-After``) while
the lease is still renewed every interval, so no other process takes over
only to hit the same rate limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Connection, Engine

from ticker import lease, log
from ticker.config import Settings
from ticker.db import writing
from ticker.errors import SourceError
from ticker.events import Event, Tick, check_price, check_size, format_ts, now_us
from ticker.sources import Source, make_source
from ticker.upkeep import Upkeep

logger = logging.getLogger(__name__)

MAX_BACKOFF = 60.0  # seconds between fetches after many failures in a row


@dataclass
class ProducerState:
    """What ``/healthz`` reports about this process's producer."""

    holder: str
    leader: bool = False
    ticks: int = 0
    errors: int = 0  # failed runs: the source's failures and the database's
    consecutive_errors: int = 0  # the source's failures since its last good answer
    last_tick_at: float | None = None  # wall-clock times, seconds since the epoch
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    retry_at: float = 0.0  # on the producer's clock: no fetch before it
    pruned: int = 0
    rolled_up: int = 0  # events this process rolled into the candles
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Producer(Upkeep):
    """Run one interval of the source under the lease; roll up and prune when leader."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        on_append: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.on_append = on_append
        self.clock = clock  # for the back-off; tests drive it
        self.source: Source | None = make_source(settings)
        self.tracked = frozenset(settings.symbols)
        self.state = ProducerState(holder=lease.new_holder_id())
        # The holder renews once per interval, after a fetch that may take up to
        # the source's timeout, so the lease must outlast a few intervals and that.
        interval = settings.tick_interval
        fetch = 0.0 if self.source is None else self.source.timeout
        self.lease_ttl = max(settings.lease_ttl, 3 * interval, interval + 2 * fetch)

    def produce(self) -> list[int]:
        """Fetch one interval of ticks and append them while holding the lease; return their ids."""
        with self.state.lock:  # APScheduler may overlap a slow run with the next
            try:
                ids = self._produce()
            except Exception as exc:
                self.state.errors += 1
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                self.state.last_error_at = time.time()
                logger.exception("producer run failed")
                self.on_error("run")
                return []
        if ids:
            self.on_append()
            self.on_ticks(len(ids))
        return ids

    def on_ticks(self, count: int) -> None:
        """Note ``count`` ticks appended to the log by this producer."""

    def _produce(self) -> list[int]:
        if not self.state.leader and not self._take_over():
            return []
        ticks = self._fetch()
        try:
            with writing(self.engine) as conn:
                claim = lease.claim(conn, self.state.holder, self.lease_ttl)
                held_meanwhile = claim is lease.Claim.ACQUIRED
                latest, cursors = self._latest(conn) if held_meanwhile else ([], {})
                ids = self._append(conn, ticks) if claim is lease.Claim.RENEWED else []
        except Exception:
            # Unsure what committed: the source resumes from the log (and its cursors).
            logger.warning("producer append failed; the source resumes from the log next run")
            self._lost()
            raise
        if claim is lease.Claim.TAKEN:  # the source is paused only once the lock is free
            logger.warning(
                "producer lease lost to another process; %d fetched ticks dropped", len(ticks)
            )
            self._lost()
            return []
        if held_meanwhile:
            logger.warning(
                "producer lease was held by another process meanwhile; "
                "%d fetched ticks dropped, resuming from the log",
                len(ticks),
            )
            self._resume(latest, cursors)
            return []
        if ids:
            self.state.ticks += len(ids)
            self.state.last_tick_at = time.time()
        return ids

    def _take_over(self) -> bool:
        """Claim the lease if it is free or lapsed and resume the source; say if it is ours."""
        with self.engine.connect() as conn:
            held = lease.current(conn)
            if held is not None and held[0] != self.state.holder and held[1] > lease.clock_us(conn):
                return False
        with writing(self.engine) as conn:
            if lease.claim(conn, self.state.holder, self.lease_ttl) is lease.Claim.TAKEN:
                return False
            latest, cursors = self._latest(conn)
        logger.info("producer lease acquired by %s", self.state.holder)
        self._resume(latest, cursors)
        return True

    def _latest(self, conn: Connection) -> tuple[list[Event], dict[str, str]]:
        """Read where the log stands for the source: the newest events and the cursors."""
        if self.source is None:
            return [], {}
        symbols = self.settings.symbols
        return log.latest(conn, symbols), log.read_cursors(conn, self.settings.source)

    def _append(self, conn: Connection, ticks: Sequence[Tick]) -> list[int]:
        """Insert ``ticks`` and, in the same transaction, the source's cursors after them."""
        ids = log.insert_ticks(conn, ticks)
        if self.source is not None:
            cursors = self.source.checkpoint()
            if cursors:
                log.write_cursors(conn, self.settings.source, cursors)
        return ids

    def _resume(self, latest: Sequence[Event], cursors: Mapping[str, str]) -> None:
        self.state.leader = True
        if self.source is not None:
            self.source.restore(cursors)
            self.source.resume(latest)

    def _lost(self) -> None:
        """Stop producing until a take-over: the source lets go of its upstream."""
        self.state.leader = False
        if self.source is not None:
            self.source.pause()

    def _fetch(self) -> list[Tick]:
        """Ask the source for this interval's ticks, unless it is backing off; never raise."""
        if self.source is None or self.clock() < self.state.retry_at:
            return []
        started = self.clock()
        try:
            ticks = self.source.next_ticks(now_us())
        except Exception as exc:
            self._source_failed(exc, started)
            return self._accepted(exc.ticks if isinstance(exc, SourceError) else [])
        self.state.consecutive_errors = 0
        self.state.last_success_at = time.time()
        return self._accepted(ticks)

    def _source_failed(self, exc: Exception, started: float) -> None:
        """Count a failed fetch, log its cause and set when to try again."""
        state = self.state
        state.errors += 1
        state.consecutive_errors += 1
        state.last_error = (
            str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
        )
        state.last_error_at = time.time()
        self.on_error("source")
        interval = self.settings.tick_interval
        backoff = min(MAX_BACKOFF, interval * 2 ** min(state.consecutive_errors - 1, 16))
        # Runs start once an interval: aim half an interval early so the due one is not skipped.
        state.retry_at = started + backoff - interval / 2
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            state.retry_at = max(state.retry_at, self.clock() + retry_after)
        wait = max(0.0, state.retry_at - self.clock())
        logger.warning(
            "source failed (%d in a row), next try in %.1fs: %s",
            state.consecutive_errors,
            wait,
            state.last_error,
            exc_info=not isinstance(exc, SourceError),  # a bug in a source: show where
        )

    def _accepted(self, ticks: Sequence[Tick]) -> list[Tick]:
        """Return the ticks the log may take: tracked symbols, plain decimal prices and sizes."""
        good = []
        for tick in ticks:
            try:
                if tick.symbol not in self.tracked:
                    raise ValueError("the symbol is not tracked")
                check_price(tick.price)
                if tick.size is not None:
                    check_size(tick.size)
            except (TypeError, ValueError) as exc:
                logger.warning("source gave a tick the log refuses (%s): %r", exc, tick)
                continue
            good.append(tick)
        return good

    def health(self) -> dict[str, Any]:
        """Return this process's producer counters for ``/healthz``."""
        state = self.state
        wait = state.retry_at - self.clock() if state.consecutive_errors else 0.0
        return {
            "ticks": state.ticks,
            "errors": state.errors,
            "consecutive_errors": state.consecutive_errors,
            "last_tick": _iso(state.last_tick_at),
            "last_success": _iso(state.last_success_at),
            "last_error": state.last_error,
            "last_error_at": _iso(state.last_error_at),
            "retry_in_s": round(max(0.0, wait), 3),
            "pruned": state.pruned,
            "rolled_up": state.rolled_up,
        }

    def release(self) -> None:
        """Give up the lease so another process takes over at once, and close the source."""
        if self.state.leader:
            self.state.leader = False
            if self.source is not None:
                self.source.pause()  # the connection closes before a successor opens its own
            try:
                lease.release(self.engine, self.state.holder)
            except Exception:
                logger.exception("could not release the producer lease")
        if self.source is not None:
            try:
                self.source.close()
            except Exception:
                logger.exception("could not close the source")

    def schedule(self, scheduler: BaseScheduler) -> None:
        """Add the produce, rollup and prune jobs to ``scheduler``."""
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
        scheduler.add_job(
            self.rollup,
            "interval",
            seconds=self.settings.rollup_interval,
            id="rollup",
            max_instances=1,
            coalesce=True,
        )
        retention = self.settings.retention
        every = self.settings.prune_interval
        if every is None:
            every = (
                60.0 if retention.max_age is None else min(60.0, max(1.0, retention.max_age / 10))
            )
        scheduler.add_job(
            self.prune,
            "interval",
            seconds=every,
            id="prune",
            max_instances=1,
            coalesce=True,
        )


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else format_ts(int(seconds * 1_000_000))
