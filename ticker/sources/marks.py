"""Where each symbol's trades stand: the :class:`Mark` of the last trade taken.

A trade at or before its symbol's mark is a duplicate (a replay after a
reconnect).  Where the venue's ids rise that is decided by id; elsewhere by
the trade's time, and at the mark's own time by the ids taken then.  A mark
is also what the producer writes as the source's cursor
(``ticker.log.cursors``), beside the ticks it covers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ticker.sources.upstream import Trade


@dataclass
class Mark:
    """Where a symbol's trades stand: the last one taken, and the ids taken at its time."""

    trade_id: str
    ts: int
    ids_at_ts: set[str] = field(default_factory=set)

    def dump(self) -> str:
        """Return the mark as the text a cursor row stores."""
        return json.dumps({"id": self.trade_id, "ts": self.ts, "ids": sorted(self.ids_at_ts)})

    @classmethod
    def load(cls, text: str) -> Mark:
        """Read a mark written by :meth:`dump`."""
        data = json.loads(text)
        return cls(str(data["id"]), int(data["ts"]), {str(i) for i in data.get("ids", ())})


def mark_after(mark: Mark | None, trade: Trade) -> Mark:
    """Return the mark that stands just after ``trade``, taken after ``mark``."""
    at_ts = mark.ids_at_ts if mark is not None and mark.ts == trade.ts else set()
    return Mark(trade.trade_id, trade.ts, {*at_ts, trade.trade_id})


def trade_order(trade: Trade) -> tuple[int, int, str]:
    """Sort trades by time, then by numeric id where the ids are numbers."""
    tid = trade.trade_id
    return (trade.ts, int(tid) if tid.isdigit() else 0, tid)


def seen(mark: Mark, trade: Trade, ordered: bool) -> bool:
    """Tell whether ``trade`` was taken already: by id where ids rise, else by time and id."""
    if ordered and mark.trade_id.isdigit() and trade.trade_id.isdigit():
        return int(trade.trade_id) <= int(mark.trade_id)
    if trade.ts != mark.ts:
        return trade.ts < mark.ts
    return trade.trade_id in mark.ids_at_ts
