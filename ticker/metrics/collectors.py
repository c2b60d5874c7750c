"""What the source's health moves into the metrics, and what is read at each scrape."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine

from ticker import lease, log
from ticker.events import now_us
from ticker.sources.base import SourceHealth

logger = logging.getLogger("ticker.metrics")


class SourceMetrics:
    """What the producer's source says of its upstream, moved in after each producer run.

    The source counts in plain integers (``SourceHealth``, from its own thread);
    :meth:`report` adds what changed since the last run.  Across workers the
    counters add up; ``connected`` and the last message's time take the
    largest live value: only the lease holder's source is connected.
    """

    COUNTERS = ("trades", "duplicates", "gaps", "reconnects", "malformed", "dropped")

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.connected = Gauge(
            "ticker_source_connected",
            "1 when the producer's source holds its upstream connection (in any live worker).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.last_message = Gauge(
            "ticker_source_last_message_timestamp_seconds",
            "Wall-clock time of the source's last message from its upstream.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.rate = Gauge(
            "ticker_source_trades_per_second",
            "Trades the source handed to the producer per second, over a recent window.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        helps = {
            "trades": "Trades (or quotes) the source received, duplicates included.",
            "duplicates": "Trades the source dropped as already taken (a replay, a fill).",
            "gaps": "Breaks the source noticed in its venue's trade ids.",
            "reconnects": "Times the source reconnected to its upstream.",
            "malformed": "Messages from the upstream the source could not read, skipped.",
            "dropped": "Trades dropped because the buffer to the producer was full.",
        }
        self.counters = {
            name: Counter(f"ticker_source_{name}", helps[name], registry=registry)
            for name in self.COUNTERS
        }
        self._reported = dict.fromkeys(self.COUNTERS, 0)
        self.newest: float | None = None  # this process's last message, wall clock

    def report(self, health: SourceHealth) -> None:
        """Move what ``health`` counted since the last report into the metrics."""
        for name, counter in self.counters.items():
            value = getattr(health, name)
            if value > self._reported[name]:
                counter.inc(value - self._reported[name])
            self._reported[name] = value
        self.connected.set(1 if health.connected else 0)
        self.rate.set((health.trades_per_s or 0.0) if health.connected else 0.0)
        if health.last_message_at is not None:
            self.newest = time.time() - (time.monotonic() - health.last_message_at)
            self.last_message.set(self.newest)


class SourceAgeCollector:
    """Yield the age of the source's last message at scrape time (the newest of any worker)."""

    def __init__(self, source: SourceMetrics, shared: str | None) -> None:
        self.source = source
        self.files = None if shared is None else MultiProcessCollector(None, path=shared)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        """Yield ``ticker_source_last_message_age_seconds`` once any message came."""
        newest = self.source.newest if self.files is None else self._newest_of_all()
        if newest is not None:
            yield GaugeMetricFamily(
                "ticker_source_last_message_age_seconds",
                "Seconds since the source's last message from its upstream.",
                value=max(0.0, time.time() - newest),
            )

    def _newest_of_all(self) -> float | None:
        assert self.files is not None
        for family in self.files.collect():  # type: ignore[no-untyped-call]
            if family.name == "ticker_source_last_message_timestamp_seconds":
                values = [sample.value for sample in family.samples if sample.value > 0]
                return max(values, default=None)
        return None


class LogCollector:
    """Read the log's gauges from the database at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        """Yield whether the database answered, and if so the head, horizon, age and lease."""
        up = GaugeMetricFamily("ticker_database_up", "1 when the database answered the scrape.")
        try:
            with self.engine.connect() as conn:
                position = log.position(conn)
                newest = log.latest_any(conn)
                holder = lease.current(conn)
                clock = lease.clock_us(conn)
        except Exception as exc:
            logger.warning("metrics: database unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "ticker_log_head_id", "Highest id committed to the log.", value=position.head
        )
        yield GaugeMetricFamily(
            "ticker_log_pruned_through_id",
            "Highest id deleted by retention; a resume point below it gets a reset.",
            value=position.pruned_through,
        )
        if newest is not None:
            yield GaugeMetricFamily(
                "ticker_log_newest_tick_age_seconds",
                "Age of the newest tick in the log (by its ts).",
                value=max(0.0, (now_us() - newest.ts) / 1e6),
            )
        held = holder is not None and holder[1] > clock
        yield GaugeMetricFamily(
            "ticker_producer_lease_held",
            "1 when a producer holds an unexpired lease.",
            value=1 if held else 0,
        )
