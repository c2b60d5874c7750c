"""Prometheus metrics: what the streams and the producer of every worker did, and the log.

Under gunicorn every worker is its own process.  gunicorn's master therefore
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before a worker starts
(``on_starting`` in ``gunicorn_conf``), so that ``prometheus_client`` (which
picks its mode when it is first imported) keeps each worker's values in a file
there, and ``/metrics``, whichever worker
answers it, adds up the files of all of them.  The master marks a dead worker's
files (``child_exit`` in ``gunicorn_conf``): its open streams stop counting,
and what it sent stays in the totals.  Without the variable (the Flask test
client, ``ticker produce``) each app has a registry of its own.

The per-event cost stays low: the stream calls ``on_sent`` once per write with
a count, never once per event.  The log's gauges (head, prune horizon, newest
tick's age, lease) are read from the database when scraped, so every worker
reports the same, current numbers.  The source's (``ticker_source_*``: whether
it is connected, its last message, trades, gaps, reconnects) are moved in from
its ``SourceHealth`` after each producer run; the age of the last message is
worked out at the scrape from the newest time any live worker reported.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine

from ticker import lease, log
from ticker.config import multiprocess_dir
from ticker.events import now_us
from ticker.producer import Producer
from ticker.sources.base import SourceHealth
from ticker.stream.slots import Slot, Streams

logger = logging.getLogger(__name__)

RESET_REASONS = ("expired", "ahead")
ERROR_STAGES = ("source", "run", "rollup", "prune")
# Seconds from a tick's time to its write to a client: sub-millisecond on one
# host, a few hundred milliseconds across a busy cluster, more for a slow reader.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The metrics of one app, and the registry that ``/metrics`` renders."""

    def __init__(self, engine: Engine) -> None:
        shared = multiprocess_dir()
        # Multiprocess metrics write to their files; no registry of their own.
        own = None if shared else CollectorRegistry()
        self.streams_open = Gauge(
            "ticker_streams_open",
            "Streams open now, across the live workers.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.streams_opened = Counter(
            "ticker_streams_opened", "Streams opened (a slot taken).", registry=own
        )
        self.streams_refused = Counter(
            "ticker_streams_refused",
            "Streams answered busy: the worker had TICKER_MAX_STREAMS open.",
            registry=own,
        )
        self.events_sent = Counter(
            "ticker_events_sent",
            "Tick messages written to clients, replayed ones included.",
            registry=own,
        )
        self.events_replayed = Counter(
            "ticker_events_replayed",
            "Tick messages written while catching a client up after its last id.",
            registry=own,
        )
        self.resets = Counter(
            "ticker_stream_resets",
            "Reset messages sent: the log could not resume a client (expired or ahead).",
            ["reason"],
            registry=own,
        )
        self.fallbacks = Counter(
            "ticker_stream_fallbacks",
            "Times a slow stream fell behind the worker's hub and was served from the log.",
            registry=own,
        )
        self.latency = Histogram(
            "ticker_tick_to_send_seconds",
            "Time from a tick's ts to its live write to a client (the newest tick of a write).",
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.producer_ticks = Counter(
            "ticker_producer_ticks", "Ticks the producer appended to the log.", registry=own
        )
        self.producer_errors = Counter(
            "ticker_producer_errors",
            "Producer failures: source (a fetch), run (e.g. the database), prune.",
            ["stage"],
            registry=own,
        )
        self.pruned = Counter(
            "ticker_log_pruned_events", "Events deleted by retention.", registry=own
        )
        self.append_failures = Counter(
            "ticker_log_append_failures",
            "Appends through the API that failed (a full disk, a read-only database, a lock).",
            registry=own,
        )
        self.append_groups = Counter(
            "ticker_log_append_groups",
            "Transactions that committed appends through the API (one per group commit).",
            registry=own,
        )
        self.append_batches = Counter(
            "ticker_log_append_batches",
            "Batches appended through the API; divided by the groups, batches per transaction.",
            registry=own,
        )
        self.source = SourceMetrics(own)
        for reason in RESET_REASONS:  # show zeros, so rates and alerts have a series
            self.resets.labels(reason)
        for stage in ERROR_STAGES:
            self.producer_errors.labels(stage)

        self.registry = CollectorRegistry()
        if shared:
            MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
        else:
            assert own is not None
            self.registry.register(own)
        self.registry.register(LogCollector(engine))
        self.registry.register(SourceAgeCollector(self.source, shared))

    def on_append_group(self, batches: int) -> None:
        """Count a group commit of ``batches`` batches."""
        self.append_groups.inc()
        self.append_batches.inc(batches)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """Return the exposition for an ``Accept`` header, and its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


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


class MeteredStreams(Streams):
    """The streams of one process, also counted in :class:`Metrics`."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        super().__init__(limit)
        self.metrics = metrics
        # Writes are counted in plain integers and moved into prometheus-client at
        # each pulse (and scrape): its multiprocess values write an mmap on every
        # update, which cost about 12% of a worker at 1,000 streams x 10 ticks/s.
        self._flushed_sent = 0
        self._flushed_replayed = 0
        self._latency_counts = [0] * (len(metrics.latency._upper_bounds))
        self._latency_sum = 0.0
        self._flush_lock = threading.Lock()

    def acquire(self, request_id: str) -> Slot | None:
        """Take a slot if one is free; count a refusal."""
        slot = super().acquire(request_id)
        if slot is None:
            self.metrics.streams_refused.inc()
        return slot

    def on_open(self) -> None:
        """Count a stream opened."""
        super().on_open()
        self.metrics.streams_open.inc()
        self.metrics.streams_opened.inc()

    def on_close(self) -> None:
        """Count a stream closed."""
        super().on_close()
        self.metrics.streams_open.dec()

    def on_sent(self, count: int, last_ts: int | None, replay: bool, writes: int = 1) -> None:
        """Count ``count`` tick messages in ``writes`` writes; time live ones from the newest."""
        super().on_sent(count, last_ts, replay, writes)
        if count > 0 and not replay and last_ts is not None:
            seconds = max(0.0, (now_us() - last_ts) / 1e6)
            self._latency_counts[bisect_left(self.metrics.latency._upper_bounds, seconds)] += writes
            self._latency_sum += seconds * writes

    def flush(self) -> None:
        """Move the writes counted since the last flush into the Prometheus metrics."""
        with self._flush_lock:
            metrics = self.metrics
            sent, replayed = self.sent, self.replayed
            if sent > self._flushed_sent:
                metrics.events_sent.inc(sent - self._flushed_sent)
                self._flushed_sent = sent
            if replayed > self._flushed_replayed:
                metrics.events_replayed.inc(replayed - self._flushed_replayed)
                self._flushed_replayed = replayed
            counts, self._latency_counts = self._latency_counts, [0] * len(self._latency_counts)
            total, self._latency_sum = self._latency_sum, 0.0
            # prometheus-client has no bulk observe: add to the histogram's own
            # bucket and sum values, as observe() would one at a time.
            histogram = metrics.latency
            for bucket, n in zip(histogram._buckets, counts, strict=True):
                if n:
                    bucket.inc(n)
            if total:
                histogram._sum.inc(total)

    def on_reset(self, reason: str) -> None:
        """Count a reset by its reason."""
        super().on_reset(reason)
        self.metrics.resets.labels(reason).inc()

    def on_fallback(self) -> None:
        """Count a stream served from the log after falling behind the hub."""
        super().on_fallback()
        self.metrics.fallbacks.inc()


class MeteredProducer(Producer):
    """The producer, also counted in :class:`Metrics`."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    def produce(self) -> list[int]:
        """Run the producer once, then report its source's health."""
        try:
            return super().produce()
        finally:
            self._report_source()

    def release(self) -> None:
        """Hand the lease on and close the source, then report it disconnected."""
        super().release()
        self._report_source()

    def _report_source(self) -> None:
        if self.source is not None:
            self.metrics.source.report(self.source.health)

    def on_ticks(self, count: int) -> None:
        """Count ticks appended."""
        self.metrics.producer_ticks.inc(count)

    def on_error(self, stage: str) -> None:
        """Count a failure by stage."""
        self.metrics.producer_errors.labels(stage).inc()

    def on_pruned(self, count: int) -> None:
        """Count events deleted by retention."""
        self.metrics.pruned.inc(count)
