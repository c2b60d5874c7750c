"""The stream path: from the hub to each client's socket, and from a reconnect back to live.

A stream's life, from :func:`ticker.views.open_stream`:

- it takes a slot (``slots``: the process's ``TICKER_MAX_STREAMS`` and what
  its streams sent; the one write timeout, swept on every pulse);
- its cursor catches up (``cursor``: snapshot, reset or replay from the log
  or the hub, then the ``live`` marker) and follows live ticks;
- it is written either by the server (``wsgi``: a WSGI body, for any
  server) or, under gunicorn's gevent worker, on its own socket
  (``takeover``), and once caught up it is parked with the process's
  ``broadcast.Broadcaster``, which writes every parked stream from one
  greenlet, indexed by symbol (``groups``) so that each publish costs what
  it delivers.

ARCHITECTURE.md draws these timelines and who wins each race.
"""

from ticker.stream.broadcast import Broadcaster, Listener
from ticker.stream.cursor import (
    PAGE,
    Cursor,
    Subscription,
    catch_up,
    keepalive_after,
    live,
    read_page,
)
from ticker.stream.slots import Slot, Streams, Writer, shutting, write_timeout
from ticker.stream.takeover import (
    TAKEOVER,
    ClientSocket,
    Takeover,
    access_line,
    chunk,
    possible,
    taking_over,
)
from ticker.stream.wsgi import body

__all__ = [
    "PAGE",
    "TAKEOVER",
    "Broadcaster",
    "ClientSocket",
    "Cursor",
    "Listener",
    "Slot",
    "Streams",
    "Subscription",
    "Takeover",
    "Writer",
    "access_line",
    "body",
    "catch_up",
    "chunk",
    "keepalive_after",
    "live",
    "possible",
    "read_page",
    "shutting",
    "taking_over",
    "write_timeout",
]
