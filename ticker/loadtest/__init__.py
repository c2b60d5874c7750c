"""``ticker loadtest``: many concurrent SSE clients and a publisher against any deployment.

One asyncio process opens N streams (spread over several local source
addresses when asked, to get past one address's ~28,000 ports), each with its
watchlist (rotating, its own random draw, or one shared by all), optionally
publishes ticks at a fixed rate through ``POST /api/ticks`` (in batches when
asked; the report says how many publishes were planned and how many made, so
a server that cannot keep up shows), and checks every client's ids against
what was published for its own symbols: loss, duplicates, reordering and
other symbols' ticks must all be zero.  Latency is publish-to-receive: the publisher stamps each
tick's ``ts`` with its send time, and clients subtract it from the arrival
time.

- :mod:`~ticker.loadtest.receive`: the streams (an asyncio protocol each).
- :mod:`~ticker.loadtest.publish`: the publisher.
- :mod:`~ticker.loadtest.report`: the checks, the report and its table.
- :mod:`~ticker.loadtest.runner`: one run, from connecting to draining.
"""

from __future__ import annotations

from ticker.loadtest.publish import Published
from ticker.loadtest.receive import Received
from ticker.loadtest.report import make_report, render
from ticker.loadtest.runner import WATCHLISTS, run, watchlists

__all__ = ["WATCHLISTS", "Published", "Received", "make_report", "render", "run", "watchlists"]
