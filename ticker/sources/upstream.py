"""What a streamed venue implements for :class:`~ticker.sources.feed.FeedSource`.

An :class:`Upstream` is one connection to a venue's trade stream, run on the
feed thread's asyncio loop.  It implements ``connect``, ``receive`` (the next
raw trades, raising when the connection broke), ``parse`` (one raw trade into
a :class:`Trade`, raising ``ValueError``/``KeyError``/``TypeError`` when it
is malformed; an upstream that reads frames itself reports an unreadable one
to ``FeedSource.skip_malformed``), ``close``, and, where the venue numbers
its trades 1, 2, 3 per symbol (``sequential = True``), ``fill`` (the trades
after an id, over REST).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ticker.events import Tick


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade of a venue: our symbol, the venue's exact strings and its trade time."""

    symbol: str
    price: str
    size: str
    ts: int  # the venue's trade time, microseconds since the epoch
    trade_id: str

    def tick(self) -> Tick:
        """Return the trade as the tick the log takes."""
        return Tick(self.symbol, self.price, self.ts, self.size)


class Upstream(ABC):
    """One connection to a venue's trade stream, run on the feed thread's loop."""

    #: Trade ids are integers rising per symbol: an id at or below the mark is a duplicate.
    ordered: bool = False
    #: They are also consecutive: a jump is a gap, filled by ``fill``.
    sequential: bool = False

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection and subscribe (markets may be loaded here)."""

    @abstractmethod
    async def receive(self) -> Sequence[Any]:
        """Return the next raw trades; raise when the connection is broken."""

    @abstractmethod
    def parse(self, raw: Any) -> Trade:
        """Turn one raw trade into a :class:`Trade`; raise ValueError, KeyError or TypeError."""

    async def fill(self, symbol: str, after_id: int, limit: int) -> Sequence[Any]:
        """Return up to ``limit`` raw trades of ``symbol`` after ``after_id``, over REST."""
        return []

    def retry_after(self) -> float | None:
        """Return the seconds the venue asked to wait (a ``Retry-After``) when it last refused."""
        return None

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; never raise."""
