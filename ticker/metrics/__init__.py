"""Prometheus metrics: what the streams and the producer of every worker did, and the log.

``registry`` declares them and renders ``/metrics``; ``collectors`` holds what
is read at the scrape (the log's gauges, the source's last message) and what
the source's health moves in; ``metered`` counts the streams and the producer.

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

from ticker.metrics.metered import MeteredProducer, MeteredStreams
from ticker.metrics.registry import Metrics

__all__ = ["MeteredProducer", "MeteredStreams", "Metrics"]
