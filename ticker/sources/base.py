"""What every price source is: the interface the producer drives.

A source only turns "the next interval is due" into ticks.  It never touches
the log: the producer calls ``next_ticks`` outside any database transaction,
then appends what it got while holding the lease, so a slow network answer
never holds the log's write lock.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ticker.events import Event, Tick


@dataclass
class SourceHealth:
    """What a source says of its upstream in ``/healthz`` and ``/metrics``.

    A polling source only fills ``last_message_at``; a streaming one all of it.
    ``market`` is ``"open"`` or ``"closed"`` for a venue with trading hours
    (``None`` for one that never closes): a closed market is not stale.
    ``next_open`` and ``next_close`` are the venue's next changes (ISO 8601 UTC).
    """

    connected: bool | None = None  # None: the source holds no connection
    last_message_at: float | None = None  # time.monotonic() of the last message
    trades: int = 0  # trades (or quotes) received, before deduplication
    duplicates: int = 0  # trades dropped as already seen
    gaps: int = 0  # breaks noticed in the venue's trade ids or sequence numbers
    reconnects: int = 0
    malformed: int = 0  # messages the source could not read, skipped
    dropped: int = 0  # trades dropped because the buffer to the producer was full
    trades_per_s: float | None = None  # handed to the producer, over a recent window
    market: str | None = None
    next_open: str | None = None
    next_close: str | None = None

    def report(self, now: float | None = None) -> dict[str, Any]:
        """Return the ``/healthz`` form: ages in seconds, counters as they are."""
        now = time.monotonic() if now is None else now
        age = None if self.last_message_at is None else round(now - self.last_message_at, 3)
        return {
            "connected": self.connected,
            "last_message_age_s": age,
            "trades": self.trades,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "reconnects": self.reconnects,
            "malformed": self.malformed,
            "dropped": self.dropped,
            "trades_per_s": self.trades_per_s,
            "market": self.market,
            "next_open": self.next_open,
            "next_close": self.next_close,
        }


class Source(ABC):
    """A source of ticks: subclass it and implement ``next_ticks``.

    ``next_ticks`` returns the ticks of one interval, or raises
    :class:`~ticker.errors.SourceError` (or anything else) when it has none to
    give; the producer logs and counts the failure, backs off, and carries on.
    """

    #: The longest one ``next_ticks`` call may block, in seconds (its network
    #: timeout).  The producer keeps its lease longer than that.
    timeout: float = 0.0

    @abstractmethod
    def next_ticks(self, now_us: int) -> list[Tick]:
        """Return the ticks of one interval; ``now_us`` is the time to stamp them with."""

    @property
    def health(self) -> SourceHealth:
        """What ``/healthz`` and ``/metrics`` show of this source's upstream (made on first use)."""
        found = self.__dict__.get("_health")
        if found is None:
            found = self.__dict__["_health"] = SourceHealth()
        return found

    def resume(self, latest: Sequence[Event]) -> None:  # noqa: B027 (optional hook)
        """Continue from the log's latest events when this process takes the producer over."""

    def checkpoint(self) -> Mapping[str, str]:
        """Return where the ticks the last ``next_ticks`` gave leave each symbol's stream.

        The producer stores these cursors in the transaction that appends
        those ticks, and gives them back to ``restore`` at a take-over.  A
        source that needs no cursor returns none.
        """
        return {}

    def restore(self, cursors: Mapping[str, str]) -> None:  # noqa: B027 (optional hook)
        """Take the cursors the log holds, before ``resume``, when this process takes over."""

    def pause(self) -> None:  # noqa: B027 (optional hook)
        """This process lost the producer lease: let go of upstream connections until ``resume``."""

    def closed_symbols(self) -> frozenset[str]:
        """Return the tracked symbols whose market is closed now (may ask the venue's clock).

        A closed symbol is not stale: its ticks stopped because trading did.
        """
        return frozenset()

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the source holds (connections, files)."""
