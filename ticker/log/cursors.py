"""Where a streamed source's trades stand, written with the ticks they led to.

Invariant: a cursor row moves only in the write transaction that appends the
ticks it stands after (``Producer._produce``), so the rows always describe
exactly what the log holds.  A process that takes the producer lease over
reads them in its take-over transaction and its source starts after them:
no trade the previous holder committed is appended again.  Rows are keyed by
``TICKER_SOURCE`` as well as the symbol, so a switch of venue starts afresh.
The cursor text is the source's own (``ticker.sources.marks.Mark``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, String, Text, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from ticker.db import Base


class SourceCursor(Base):
    """The cursor of one symbol of one source: the last trade in the log."""

    __tablename__ = "source_cursors"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)


def read_cursors(conn: Connection, source: str) -> dict[str, str]:
    """Return ``symbol -> cursor`` of ``source``."""
    rows = conn.execute(
        select(SourceCursor.symbol, SourceCursor.cursor).where(SourceCursor.source == source)
    )
    return {str(symbol): str(cursor) for symbol, cursor in rows}


def write_cursors(conn: Connection, source: str, cursors: Mapping[str, str]) -> None:
    """Set the cursors of ``source``, within the caller's write transaction."""
    for symbol, cursor in cursors.items():
        changed = conn.execute(
            update(SourceCursor)
            .where(SourceCursor.source == source, SourceCursor.symbol == symbol)
            .values(cursor=cursor)
        )
        if changed.rowcount == 0:
            conn.execute(insert(SourceCursor).values(source=source, symbol=symbol, cursor=cursor))
