"""Retention: cut the log from its old end, never above the rollup watermark."""

from __future__ import annotations

from sqlalchemy import Engine, delete, select

from ticker.config import Retention
from ticker.db import CANDLE_LOCK, take, writing
from ticker.log.table import CHANNEL, driver_rows, position, rolled_up, ticks, write_state


def prune(engine: Engine, retention: Retention, now_us: int, batch: int = 5000) -> int:
    """Delete the oldest events beyond ``retention`` in short batches; return how many.

    The log is cut from its old end: events go in id order while they are older
    than the age limit or beyond the count limit, so ids stay a contiguous
    suffix and ``pruned_through`` names exactly what a reader may have missed.
    Nothing above the rollup watermark is deleted: each batch first rolls the
    events it is about to delete into the candles, in its own transaction.
    """
    if not retention:
        return 0
    deleted = 0
    while True:
        with writing(engine) as conn:
            pos = position(conn)
            oldest = list(
                conn.execute(
                    select(ticks.c.id, ticks.c.ts)
                    .where(ticks.c.id > pos.pruned_through)
                    .order_by(ticks.c.id)
                    .limit(batch)
                )
            )
            cut = pos.pruned_through
            if retention.max_events is not None:
                cut = max(cut, pos.head - retention.max_events)
            if retention.max_age is not None:
                horizon = now_us - int(retention.max_age * 1_000_000)
                for row_id, ts in oldest:
                    if ts >= horizon:
                        break
                    cut = max(cut, int(row_id))
            if not oldest:
                return deleted
            cut = min(cut, int(oldest[-1][0]))
            if cut <= pos.pruned_through:
                return deleted
            # Roll up in the same transaction as the delete: a crash in between
            # cannot lose an event from the candles.  (candles reads the log.)
            # Locks in this order only: log, then candles.
            from ticker.candles import fold_through

            take(conn, CANDLE_LOCK)
            fold_through(conn, cut)
            cut = min(cut, rolled_up(conn))  # never delete what the candles do not hold yet
            if cut <= pos.pruned_through:
                return deleted
            result = conn.execute(delete(ticks).where(ticks.c.id <= cut))
            deleted += result.rowcount
            write_state(conn, "pruned_through", cut)
            if conn.dialect.name == "postgresql":  # the followers read the new horizon at once
                driver_rows(conn, "SELECT pg_notify(?, ?)", (CHANNEL, str(pos.head)))
