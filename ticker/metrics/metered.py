"""The streams and the producer of one process, counted in the app's :class:`Metrics`."""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

from ticker.events import now_us
from ticker.metrics.registry import Metrics
from ticker.producer import Producer
from ticker.stream.slots import Slot, Streams


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
