"""Group commit on a real SQLite file and the machine's PostgreSQL, with OS threads.

Each caller gets the ids of its own batch, in its order, only once committed;
batches that arrive while a group is being written are committed together in
the next transaction; a batch whose insert fails fails alone; a transaction
that fails fails every caller in it, with the cause, and writes nothing.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from tests.fakes import TOKEN, eventually
from tests.sse_client import SSEStream
from ticker.db import WRITE_LOCK, make_engine
from ticker.events import Tick
from ticker.log.group import GroupCommit
from ticker.state import app_state

T0 = 1_795_255_200_000_000  # 2026-11-21T10:00:00Z
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def engine(app: Any) -> Engine:
    return app_state(app).engine


def rows(engine: Engine) -> dict[int, tuple[str, str, int]]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT id, symbol, price, ts FROM ticks ORDER BY id"))
        return {int(r[0]): (r[1], r[2], int(r[3])) for r in found}


def batch_of(caller: int, seq: int, n: int) -> list[Tick]:
    """A batch whose ticks say who sent them: price caller.seq, ts T0 + k."""
    return [Tick("BTC-USD", f"{caller}.{seq:04d}", T0 + k) for k in range(n)]


@contextmanager
def writer_lock_held(db_url: str) -> Iterator[None]:
    """Hold the log's writer lock from a connection of the test's own, until the block ends."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import psycopg

    with psycopg.connect(db_url.replace("+psycopg", ""), autocommit=True) as pg:
        pg.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        yield


class Caller(threading.Thread):
    """Append one batch through ``appends`` in a thread; keep its ids or its error."""

    def __init__(self, appends: GroupCommit, batch: list[Tick]) -> None:
        super().__init__(daemon=True)
        self.appends, self.batch = appends, batch
        self.ids: list[int] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.ids = self.appends.append(self.batch)
        except BaseException as exc:
            self.error = exc


def one_group(
    db_url: str, appends: GroupCommit, batches: list[list[Tick]], then: Callable[[], object]
) -> list[Caller]:
    """Append ``batches[0]`` alone, and the rest as one group behind it.

    The first caller leads and waits for the writer's lock, which the test
    holds; the others queue meanwhile, so they form the next group together.
    ``then`` runs once they are all queued, still under the lock.
    """
    callers = [Caller(appends, b) for b in batches]
    with writer_lock_held(db_url):
        callers[0].start()
        eventually(lambda: appends.leading and appends.queued == 0, "the first caller leading")
        time.sleep(0.2)  # it took its group and waits for the lock
        for caller in callers[1:]:
            caller.start()
        eventually(lambda: appends.queued == len(batches) - 1, "the others queued")
        then()
    for caller in callers:
        caller.join(30)
        assert not caller.is_alive(), "a caller never got an answer"
    return callers


def count_commits(engine: Engine) -> list[int]:
    commits = [0]

    @event.listens_for(engine, "commit")
    def _counted(conn: Any) -> None:
        commits[0] += 1

    return commits


def test_concurrent_appenders_each_get_their_own_ids_in_order(engine: Engine) -> None:
    appends = GroupCommit(engine)
    threads, per = 16, 40
    got: dict[int, list[tuple[list[Tick], list[int]]]] = {c: [] for c in range(threads)}

    def caller(c: int) -> None:
        for seq in range(per):
            batch = batch_of(c, seq, 1 + (c + seq) % 3)
            got[c].append((batch, appends.append(batch)))

    workers = [threading.Thread(target=caller, args=(c,)) for c in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    every = [i for c in got for _, ids in got[c] for i in ids]
    total = sum(len(b) for c in got for b, _ in got[c])
    assert len(every) == total == len(set(every))  # unique
    assert sorted(every) == list(range(1, total + 1))  # contiguous
    log = rows(engine)
    assert sorted(log) == sorted(every)
    for c in got:
        mine = [i for _, ids in got[c] for i in ids]
        assert mine == sorted(mine)  # in the caller's order
        for batch, ids in got[c]:
            assert ids == list(range(ids[0], ids[0] + len(batch)))  # the batch's order
            assert [log[i] for i in ids] == [(t.symbol, t.price, t.ts) for t in batch]
    assert appends.batches == threads * per
    assert appends.groups < appends.batches  # some were committed together


def test_batches_arriving_meanwhile_commit_in_one_transaction(db_url: str, engine: Engine) -> None:
    groups: list[int] = []
    appends = GroupCommit(engine, on_group=groups.append)
    commits = count_commits(engine)
    batches = [batch_of(c, 0, 2) for c in range(8)]
    callers = one_group(db_url, appends, batches, then=lambda: None)
    assert [c.error for c in callers] == [None] * 8
    assert callers[0].ids == [1, 2]
    later = sorted(callers[1:], key=lambda c: c.ids or [])
    assert [c.ids for c in later] == [[i, i + 1] for i in range(3, 17, 2)]
    assert groups == [1, 7]  # two transactions for eight batches
    if db_url.startswith("sqlite"):  # (PostgreSQL's commit goes in the driver's pipeline)
        assert commits == [2]
    log = rows(engine)
    for caller in callers:
        assert [log[i] for i in caller.ids or []] == [
            (t.symbol, t.price, t.ts) for t in caller.batch
        ]
    if db_url.startswith("postgresql"):  # the database's own word: one transaction id
        with engine.connect() as conn:
            xmins = conn.execute(text("SELECT DISTINCT xmin::text FROM ticks WHERE id > 2"))
            assert len(xmins.all()) == 1


def refuse_price(engine: Engine, price: str) -> None:
    """Make the database itself refuse to insert a tick with ``price`` (a trigger)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON ticks"
                    f" WHEN NEW.price = '{price}'"
                    " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
            return
        conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN IF NEW.price = '{price}' THEN RAISE EXCEPTION 'refused by the test';"
                " END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON ticks"
                " FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )


def test_a_batch_whose_insert_fails_in_a_group_fails_alone(db_url: str, engine: Engine) -> None:
    refuse_price(engine, "3.0000")
    groups: list[int] = []
    appends = GroupCommit(engine, on_group=groups.append)
    batches = [batch_of(c, 0, 2) for c in range(6)]
    callers = one_group(db_url, appends, batches, then=lambda: None)
    bad = next(c for c in callers if c.batch[0].price == "3.0000")
    assert isinstance(bad.error, DBAPIError) and "refused by the test" in str(bad.error)
    assert bad.ids is None
    good = [c for c in callers if c is not bad]
    assert [c.error for c in good] == [None] * 5
    log = rows(engine)
    assert sorted(log) == sorted(i for c in good for i in c.ids or [])
    for caller in good:
        assert [log[i] for i in caller.ids or []] == [
            (t.symbol, t.price, t.ts) for t in caller.batch
        ]
    assert groups == [1, 4]  # the group committed the four others


def short_lock_wait(db_url: str) -> Engine:
    """An engine like the app's whose appends give up waiting for the writer's lock at once."""
    engine = make_engine(db_url)

    @event.listens_for(engine, "connect")
    def _impatient(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA busy_timeout=1000")
        else:
            cursor.execute("SET lock_timeout = '1s'")
            dbapi_connection.commit()
        cursor.close()

    return engine


def test_a_transaction_that_fails_fails_every_caller_with_its_cause(db_url: str, app: Any) -> None:
    engine = short_lock_wait(db_url)
    try:
        groups: list[int] = []
        appends = GroupCommit(engine, on_group=groups.append)
        # The lock is held for longer than the appends wait: every transaction fails.
        batches = [batch_of(c, 0, 3) for c in range(6)]
        callers = one_group(db_url, appends, batches, then=lambda: time.sleep(2.5))
        for caller in callers:
            assert isinstance(caller.error, OperationalError), caller.error
            assert caller.ids is None
            cause = str(caller.error.orig)
            assert "locked" in cause or "lock timeout" in cause, cause
        assert rows(engine) == {} and groups == []
        # The lock free again, appends go on with the first id.
        assert appends.append(batch_of(9, 0, 2)) == [1, 2]
    finally:
        engine.dispose()


def test_the_group_is_handed_over_once_in_id_order(engine: Engine) -> None:
    handed: list[tuple[int, list[int]]] = []
    appends = GroupCommit(
        engine, on_commit=lambda before, events: handed.append((before, [e.id for e in events]))
    )
    appends.append(batch_of(0, 0, 3))
    threads = [
        threading.Thread(target=appends.append, args=(batch_of(c, 1, 2),)) for c in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert handed[0] == (0, [1, 2, 3])
    position = 0
    for before, ids in handed:  # each hand-over follows on from the one before
        assert before == position and ids == list(range(before + 1, before + 1 + len(ids)))
        position = ids[-1]
    assert position == 3 + 12 * 2


@pytest.mark.server
def test_concurrent_posts_to_gunicorn_each_get_their_ids_and_are_coalesced(
    db_url: str, serve: Callable[..., Any]
) -> None:
    server = serve(symbols="BTC-USD", source="none", workers=2)
    clients, per = 32, 25
    got: dict[int, list[tuple[dict[str, str], list[int]]]] = {c: [] for c in range(clients)}
    failures: list[BaseException] = []
    with SSEStream(f"{server.base}/stream?symbols=BTC-USD") as stream:
        snapshot = next(f for f in stream.frames() if f.event == "snapshot")
        assert snapshot.id == "0"

        def client(c: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                for seq in range(per):  # one keep-alive connection, one tick per request
                    tick = {"symbol": "BTC-USD", "price": f"1{c}.{seq:04d}"}
                    conn.request("POST", "/api/ticks", body=json.dumps(tick), headers=AUTH)
                    answer = conn.getresponse()
                    body = json.loads(answer.read())
                    assert answer.status == 201, body
                    got[c].append((tick, body["ids"]))
            except BaseException as exc:
                failures.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert failures == []
        total = clients * per
        # Live, in id order, nothing skipped or repeated, from whichever worker posted it.
        frames = stream.ticks_until(lambda f: f.event == "tick" and f.id == str(total))
    every = [i for c in got for _, ids in got[c] for i in ids]
    assert sorted(every) == list(range(1, total + 1))
    assert [int(f.id or 0) for f in frames if f.event == "tick"] == list(range(1, total + 1))
    log = {e["id"]: e for e in (f.json() for f in frames if f.event == "tick")}
    for c in got:
        mine = [ids[0] for _, ids in got[c]]
        assert mine == sorted(mine)
        for tick, (id,) in ((t, ids) for t, ids in got[c]):
            assert log[id]["price"] == tick["price"]
    metrics = server.metrics()
    batches = metrics["ticker_log_append_batches_total"]
    groups = metrics["ticker_log_append_groups_total"]
    assert batches == total
    assert groups < batches, (groups, batches)  # POSTs from many connections shared transactions
