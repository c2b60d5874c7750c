"""A lease in the database that elects the one producer among all processes.

Invariant: at most one holder produces at a time.  The producer claims or
renews the lease inside the same write transaction that appends its ticks, so
a holder whose lease lapsed (paused, cut off) cannot commit a single tick after
another process took over.  A holder that dies stops renewing; the lease
expires after ``ttl`` seconds and the next process to try takes it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from enum import Enum

from sqlalchemy import BigInteger, Connection, Engine, String, func, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from ticker.db import Base, writing

PRODUCER = "producer"


class LeaseRow(Base):
    """Who holds a named lease, and until when (microseconds since the epoch)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[int] = mapped_column(BigInteger)


class Claim(Enum):
    """The outcome of trying to hold the lease."""

    ACQUIRED = "acquired"  # it was free or lapsed; we hold it now
    RENEWED = "renewed"  # we held it and still do
    TAKEN = "taken"  # someone else holds it


def new_holder_id() -> str:
    """Return an id naming this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def current(conn: Connection, name: str = PRODUCER) -> tuple[str, int] | None:
    """Return ``(holder, expires_at)`` of the lease, or None if never held."""
    row = conn.execute(
        select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.name == name)
    ).first()
    return None if row is None else (str(row[0]), int(row[1]))


def clock_us(conn: Connection) -> int:
    """Return the time that leases are measured by, in microseconds since the epoch.

    On PostgreSQL it is the database server's clock, so hosts whose clocks
    disagree still agree on when a lease lapsed; SQLite serves one host.
    """
    if conn.dialect.name == "postgresql":
        epoch_us = func.floor(func.extract("epoch", func.clock_timestamp()) * 1_000_000)
        value = conn.scalar(select(epoch_us))
        if value is not None:
            return int(value)
    return time.time_ns() // 1000


def claim(
    conn: Connection, holder: str, ttl: float, now_us: int | None = None, name: str = PRODUCER
) -> Claim:
    """Take or renew the lease for ``holder``; call inside a write transaction.

    ``now_us`` defaults to :func:`clock_us`; tests pass their own time.
    """
    if now_us is None:
        now_us = clock_us(conn)
    expires = now_us + int(ttl * 1_000_000)
    row = conn.execute(
        select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.name == name).with_for_update()
    ).first()
    if row is None:
        conn.execute(insert(LeaseRow).values(name=name, holder=holder, expires_at=expires))
        return Claim.ACQUIRED
    if row[0] != holder and row[1] > now_us:
        return Claim.TAKEN
    conn.execute(
        update(LeaseRow).where(LeaseRow.name == name).values(holder=holder, expires_at=expires)
    )
    return Claim.RENEWED if row[0] == holder else Claim.ACQUIRED


def release(engine: Engine, holder: str, name: str = PRODUCER) -> None:
    """Give the lease up at once if ``holder`` has it, so a successor need not wait."""
    with writing(engine) as conn:
        conn.execute(
            update(LeaseRow)
            .where(LeaseRow.name == name, LeaseRow.holder == holder)
            .values(expires_at=0)
        )
