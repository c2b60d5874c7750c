"""The metrics of one app: declared once, rendered by ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine

from ticker.config import multiprocess_dir
from ticker.metrics.collectors import LogCollector, SourceAgeCollector, SourceMetrics

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
