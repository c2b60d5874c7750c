"""Group commit: appends that arrive while one is being written share its transaction.

Invariant: a caller gets its ids only once the transaction that holds its
batch has committed, and they are the ids of its batch, in its order.  Each
group is one write transaction (as ``db.writing``) under the one writer's
lock, so ids stay visible in commit order across processes and hosts, as when
every append was its own transaction; a group only makes the transactions
fewer.  A batch whose insert fails fails alone: the group is written again
with a SAVEPOINT per batch, the failing batch rolled back to its savepoint and
the others committed.  When the transaction itself fails (the disk is full,
the lock never comes, the database is read-only or gone) nothing of the group
is written and every caller in it gets that error.

The first caller that finds no group in flight leads: it lets the callers that
are already on their way join (one yield: under gevent, the greenlets whose
requests have arrived run up to their append), takes everything queued,
writes it, hands the committed events of the whole group to ``on_commit`` in
id order, and wakes the others.  Callers that queued meanwhile form the next
group, led by the first of them.  The primitives are ``threading``'s, which
gevent patches: it works with greenlets and with OS threads alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from ticker.db import WRITE_LOCK, take
from ticker.events import Event, Tick
from ticker.log.append import insert_rows, lock_insert_commit, newest_id, notify

logger = logging.getLogger(__name__)


class _Waiter:
    """One caller's batch, and what became of it."""

    __slots__ = ("batch", "done", "error", "ids", "leads")

    def __init__(self, batch: Sequence[Tick]) -> None:
        self.batch = batch
        self.ids: list[int] | None = None
        self.error: BaseException | None = None
        self.leads = False  # woken to lead the next group, not with a result
        self.done = threading.Event()


class GroupCommit:
    """Coalesce the appends of one process into as few transactions as arrive together.

    ``on_commit(before, events)``: called by the leader once a group has
    committed, with the newest id before the group (read under the lock) and
    every event it committed, in id order.  ``on_group(batches)``: called then
    too, with how many batches the transaction committed.
    """

    def __init__(
        self,
        engine: Engine,
        on_commit: Callable[[int, list[Event]], object] = lambda before, events: None,
        on_group: Callable[[int], object] = lambda batches: None,
    ) -> None:
        self.engine = engine
        self.on_commit = on_commit
        self.on_group = on_group
        self.groups = 0  # transactions committed
        self.batches = 0  # batches they committed
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._leading = False
        self._conn: Connection | None = None  # the leaders' (one leads at a time)

    @property
    def leading(self) -> bool:
        """Tell whether a group is being written (or about to be)."""
        return self._leading

    @property
    def queued(self) -> int:
        """Return how many batches wait for the next group."""
        return len(self._queue)

    def append(self, batch: Sequence[Tick]) -> list[int]:
        """Append ``batch`` with whatever else arrives meanwhile; return its ids once committed.

        Raises the error that kept the batch (or its whole group) from committing.
        """
        if not batch:
            return []
        waiter = _Waiter(batch)
        with self._lock:
            self._queue.append(waiter)
            leads = waiter.leads = not self._leading
            self._leading = True
        if not leads:
            try:
                waiter.done.wait()
            except BaseException:
                self._abandon(waiter)
                raise
        if waiter.leads and waiter.ids is None and waiter.error is None:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.ids is not None
        return waiter.ids

    def _abandon(self, waiter: _Waiter) -> None:
        """Take back a caller that stopped waiting (its greenlet was killed); lead on for it."""
        with self._lock:
            if waiter not in self._queue:
                return  # in a group being written: its leader finishes it
            self._queue.remove(waiter)
        if waiter.leads:
            self._pass_on()

    def _lead(self) -> None:
        """Write everything queued as one group, then hand the lead to the next caller."""
        time.sleep(0)  # the callers already on their way join this group
        with self._lock:
            group, self._queue = self._queue, []
        try:
            self._write(group)
        finally:
            for waiter in group:
                if waiter.ids is None and waiter.error is None:
                    waiter.error = RuntimeError("the append was interrupted; retry")
                waiter.done.set()
            self._pass_on()

    def _pass_on(self) -> None:
        with self._lock:
            if not self._queue:
                self._leading = False
                return
            head = self._queue[0]
            head.leads = True
        head.done.set()

    def _write(self, group: list[_Waiter]) -> None:
        """Commit ``group``: one insert for all; a savepoint per batch when one of them fails."""
        try:
            before, results = self._together(group)
        except Exception as exc:
            error = self._sqlalchemy(exc)
            if len(group) == 1 or isinstance(error, OperationalError):
                for waiter in group:  # the transaction itself failed: nothing written
                    waiter.error = error
                return
            try:
                before, results = self._apart(group)
            except Exception as again:
                error = self._sqlalchemy(again)
                for waiter in group:
                    waiter.error = error
                return
        events: list[Event] = []
        committed = 0
        for waiter, result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                waiter.error = result
                continue
            waiter.ids = result
            committed += 1
            events += [
                Event(i, t.symbol, t.price, t.ts, t.size)
                for i, t in zip(result, waiter.batch, strict=True)
            ]
        self.groups += 1
        self.batches += committed
        try:
            self.on_group(committed)
            if events:
                self.on_commit(before, events)
        except Exception:  # committed all the same; the follower reads the log
            logger.exception("could not hand a committed group over")

    def _together(self, group: list[_Waiter]) -> tuple[int, list[list[int] | BaseException]]:
        """Insert every batch of ``group`` in one statement, in one transaction."""
        rows = [tick for waiter in group for tick in waiter.batch]
        with self._connection() as conn:
            before, ids = lock_insert_commit(conn, rows)
        results: list[list[int] | BaseException] = []
        start = 0
        for waiter in group:  # the ids line up with the rows, so with the batches in turn
            end = start + len(waiter.batch)
            results.append(ids[start:end])
            start = end
        return before, results

    def _apart(self, group: list[_Waiter]) -> tuple[int, list[list[int] | BaseException]]:
        """Insert each batch of ``group`` under a savepoint of its own, in one transaction."""
        results: list[list[int] | BaseException] = []
        last = 0
        with self._connection() as conn, conn.begin():
            take(conn, WRITE_LOCK)
            before = newest_id(conn)
            for waiter in group:
                try:
                    ids = self._savepoint(conn, waiter.batch)
                except Exception as exc:
                    error = self._sqlalchemy(exc)
                    if isinstance(error, OperationalError):
                        raise  # not this batch's doing: the group fails
                    results.append(error)
                    continue
                results.append(ids)
                last = ids[-1]
            if last:
                notify(conn, last)
        return before, results

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """Lend the leaders' connection (one leads at a time), with no transaction open.

        Leaders keep one connection between groups: no pool checkout, no ping
        per group.  One that failed is discarded; the next group opens another.
        On SQLite a write transaction on it begins with ``BEGIN IMMEDIATE``.
        """
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self.engine.connect()
            conn.execution_options(begin="IMMEDIATE")
        try:
            yield conn
        except BaseException:
            self._conn = None
            with suppress(Exception):
                conn.invalidate()  # whatever state it was left in, it is not reused
                conn.close()
            raise

    def close(self) -> None:
        """Give the leaders' connection back to the engine's pool."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @staticmethod
    def _savepoint(conn: Connection, batch: Sequence[Tick]) -> list[int]:
        with conn.begin_nested():
            return insert_rows(conn, batch)

    def _sqlalchemy(self, exc: Exception) -> Exception:
        """Return ``exc`` as SQLAlchemy's exception, when it is the driver's own (raw cursors)."""
        dbapi = self.engine.dialect.loaded_dbapi
        if isinstance(exc, dbapi.Error) and not isinstance(exc, DBAPIError):
            return DBAPIError.instance(None, None, exc, dbapi.Error, dialect=self.engine.dialect)
        return exc
