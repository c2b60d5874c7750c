"""The producer lease on a real SQLite file: acquire, renew, refuse, expire, release."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from ticker import lease
from ticker.db import writing
from ticker.lease import Claim
from ticker.state import app_state

SECOND = 1_000_000
T0 = 1_795_255_200_000_000
TTL = 5.0


@pytest.fixture
def engine(app: Any) -> Engine:
    return app_state(app).engine


def claim(engine: Engine, holder: str, now: int) -> Claim:
    with writing(engine) as conn:
        return lease.claim(conn, holder, TTL, now)


def current(engine: Engine) -> tuple[str, int] | None:
    with engine.connect() as conn:
        return lease.current(conn)


def test_nobody_holds_a_lease_never_claimed(engine: Engine) -> None:
    assert current(engine) is None


def test_acquire_then_renew(engine: Engine) -> None:
    assert claim(engine, "a", T0) is Claim.ACQUIRED
    assert current(engine) == ("a", T0 + 5 * SECOND)
    assert claim(engine, "a", T0 + 2 * SECOND) is Claim.RENEWED
    assert current(engine) == ("a", T0 + 7 * SECOND)


def test_another_holder_is_refused_while_the_lease_is_unexpired(engine: Engine) -> None:
    claim(engine, "a", T0)
    assert claim(engine, "b", T0 + 1) is Claim.TAKEN
    assert claim(engine, "b", T0 + 5 * SECOND - 1) is Claim.TAKEN
    assert current(engine) == ("a", T0 + 5 * SECOND)


def test_another_holder_acquires_it_once_it_expired(engine: Engine) -> None:
    claim(engine, "a", T0)
    assert claim(engine, "b", T0 + 5 * SECOND) is Claim.ACQUIRED
    assert current(engine) == ("b", T0 + 10 * SECOND)
    # The old holder, back from a pause, must not think it still holds the lease.
    assert claim(engine, "a", T0 + 6 * SECOND) is Claim.TAKEN
    assert current(engine) == ("b", T0 + 10 * SECOND)


def test_release_lets_another_holder_take_it_at_once(engine: Engine) -> None:
    claim(engine, "a", T0)
    lease.release(engine, "a")
    assert claim(engine, "b", T0 + 1) is Claim.ACQUIRED
    assert current(engine) == ("b", T0 + 1 + 5 * SECOND)


def test_release_by_someone_else_changes_nothing(engine: Engine) -> None:
    claim(engine, "a", T0)
    lease.release(engine, "b")
    assert current(engine) == ("a", T0 + 5 * SECOND)
    assert claim(engine, "b", T0 + 1) is Claim.TAKEN


def test_a_claim_rolled_back_with_its_transaction_leaves_the_lease_free(engine: Engine) -> None:
    with pytest.raises(RuntimeError), writing(engine) as conn:
        assert lease.claim(conn, "a", TTL, T0) is Claim.ACQUIRED
        raise RuntimeError("the append failed")
    assert current(engine) is None
    assert claim(engine, "b", T0) is Claim.ACQUIRED


def test_new_holder_ids_differ() -> None:
    assert lease.new_holder_id() != lease.new_holder_id()
