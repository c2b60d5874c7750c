"""The append-only event log: the ``ticks`` table and every query on it.

Invariant: ids grow in commit order and are never reused, so a reader that has
seen id N never later finds a committed event below N.  Appends are serialised
(``db.writing``: SQLite's write lock, PostgreSQL's advisory lock held until the
commit is visible) and draw their ids inside that critical section, from
SQLite's ``AUTOINCREMENT`` or PostgreSQL's sequence, neither of which hands an
id out twice, even after the newest rows were pruned.  A naive ``id > N``
reader is therefore safe: no id below the newest visible one can still commit.

``pruned_through`` (in ``log_state``) is the highest id deleted by retention:
a reader resuming below it has missed events.  ``head`` is the highest id ever
committed: the newest row's id, or ``pruned_through`` when retention emptied
the table.  Each append also sends ``NOTIFY ticker_log`` on PostgreSQL, which
wakes the followers of every process at commit.  ``rolled_up`` is the rollup
watermark: the candles hold every event up to it, and retention never deletes
above it.

- :mod:`~ticker.log.table`: the tables, ``position`` and the named counters.
- :mod:`~ticker.log.append`: ``append`` and ``insert_ticks``.
- :mod:`~ticker.log.group`: ``GroupCommit``, the API's appends coalesced into
  one transaction per group.
- :mod:`~ticker.log.read`: ``read_after``, ``read_before``, ``latest``, ``newest``.
- :mod:`~ticker.log.prune`: retention.
- :mod:`~ticker.log.cursors`: streamed sources' cursors, written with their ticks.
"""

from __future__ import annotations

from ticker.log.append import append, append_after, insert_ticks
from ticker.log.cursors import SourceCursor, read_cursors, write_cursors
from ticker.log.group import GroupCommit
from ticker.log.prune import prune
from ticker.log.read import latest, latest_any, newest, read_after, read_before
from ticker.log.table import (
    CHANNEL,
    ROLLED_UP,
    EventRow,
    LogState,
    Mark,
    Position,
    driver_rows,
    head,
    mark,
    position,
    pruned_through,
    read_state,
    rolled_up,
    ticks,
    write_state,
)

__all__ = [
    "CHANNEL",
    "ROLLED_UP",
    "EventRow",
    "GroupCommit",
    "LogState",
    "Mark",
    "Position",
    "SourceCursor",
    "append",
    "append_after",
    "driver_rows",
    "head",
    "insert_ticks",
    "latest",
    "latest_any",
    "mark",
    "newest",
    "position",
    "prune",
    "pruned_through",
    "read_after",
    "read_before",
    "read_cursors",
    "read_state",
    "rolled_up",
    "ticks",
    "write_cursors",
    "write_state",
]
