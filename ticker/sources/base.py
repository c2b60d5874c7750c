"""What every price source is: the interface the producer drives.

A source only turns "the next interval is due" into ticks.  It never touches
the log: the producer calls ``next_ticks`` outside any database transaction,
then appends what it got while holding the lease, so a slow network answer
never holds the log's write lock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ticker.events import Event, Tick


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

    def resume(self, latest: Sequence[Event]) -> None:  # noqa: B027 (optional hook)
        """Continue from the log's latest events when this process takes the producer over."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the source holds (connections, files)."""
