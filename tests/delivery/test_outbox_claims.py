"""Claiming outbox rows: no double claims (SQLite CAS, PostgreSQL SKIP LOCKED), leases that
expire come back, results from a lost lease are not written, operator retry and summary."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import select, update

from oidc_logout.backchannel.request import DELIVERED as R_DELIVERED
from oidc_logout.backchannel.request import RETRY, AttemptResult
from oidc_logout.delivery import outbox
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import DEAD, DELIVERED, FAILED, IN_FLIGHT, PENDING, Delivery

from .conftest import DB, fast_settings

URIS = [f"http://127.0.0.1:9/rp{i}" for i in range(40)]


def concurrent_claims(db: DB, claimers: int = 4, limit: int = 7) -> list[list[int]]:
    """Several threads claim until nothing is left; returns the ids each one got."""
    got: list[list[int]] = [[] for _ in range(claimers)]
    start = threading.Barrier(claimers)

    def run(i: int) -> None:
        start.wait()
        while True:
            claims = outbox.claim_due(db.factory, f"owner-{i}", limit, 30)
            if not claims:
                return
            got[i].extend(c.id for c in claims)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return got


def assert_no_double_claims(db: DB, got: list[list[int]], ids: list[int]) -> None:
    flat = [i for g in got for i in g]
    assert len(flat) == len(set(flat)), "a row was claimed twice"
    assert sorted(flat) == sorted(ids)
    with db.factory() as s:
        owners = dict(s.execute(select(Delivery.id, Delivery.lease_owner)).all())
    for i, g in enumerate(got):
        assert all(owners[d] == f"owner-{i}" for d in g)


def claims_and_leases(db: DB) -> None:
    ids = db.add_deliveries(URIS[:3])
    (first,) = outbox.claim_due(db.factory, "w1", 1, 30, ids=[ids[0]])
    assert first.id == ids[0] and first.attempts == 0 and first.alg == "RS256"
    assert outbox.claim_due(db.factory, "w2", 10, 30, ids=[ids[0]]) == []  # leased
    # The lease expires (a crashed worker): the row comes back to another claimer.
    with db.factory.begin() as s:
        s.execute(
            update(Delivery)
            .where(Delivery.id == ids[0])
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )
    (again,) = outbox.claim_due(db.factory, "w2", 10, 30, ids=[ids[0]])
    assert again.id == ids[0]
    # The first owner's late result is not written (its lease was lost).
    late = AttemptResult(R_DELIVERED, 200, None, None, 5, "j1")
    assert outbox.record_result(db.factory, first, late, "w1", fast_settings()) == outbox.LOST
    row = db.get(ids[0])
    assert row.state == IN_FLIGHT and row.lease_owner == "w2" and row.attempt_log == []
    # The current owner's result is.
    assert outbox.record_result(db.factory, again, late, "w2", fast_settings()) == DELIVERED
    row = db.get(ids[0])
    assert (row.state, row.attempts, row.lease_owner) == (DELIVERED, 1, None)
    assert [a.number for a in row.attempt_log] == [1] and row.attempt_log[0].worker == "w2"
    # Rows not yet due are not claimed.
    with db.factory.begin() as s:
        s.execute(
            update(Delivery)
            .where(Delivery.id == ids[1])
            .values(next_attempt_at=utcnow() + dt.timedelta(hours=1))
        )
    assert [c.id for c in outbox.claim_due(db.factory, "w3", 10, 30)] == [ids[2]]


def test_sqlite_cas_claim_never_gives_a_row_to_two_claimers(sqlite_db: DB) -> None:
    ids = sqlite_db.add_deliveries(URIS)
    assert_no_double_claims(sqlite_db, concurrent_claims(sqlite_db), ids)


def test_sqlite_expired_lease_comes_back_and_a_lost_lease_is_not_recorded(sqlite_db: DB) -> None:
    claims_and_leases(sqlite_db)


@pytest.mark.postgres
def test_postgres_concurrent_claimers_never_claim_the_same_row(pg_db: DB) -> None:
    ids = pg_db.add_deliveries(URIS)
    assert_no_double_claims(pg_db, concurrent_claims(pg_db, claimers=6, limit=5), ids)


@pytest.mark.postgres
def test_postgres_claim_skips_rows_locked_by_another_claimer(pg_db: DB) -> None:
    ids = pg_db.add_deliveries(URIS[:6])
    with pg_db.factory() as locker, locker.begin():
        # Another claimer's transaction holds the first three rows...
        locker.execute(select(Delivery.id).where(Delivery.id.in_(ids[:3])).with_for_update()).all()
        t0 = time.monotonic()
        claims = outbox.claim_due(pg_db.factory, "w2", 10, 30)
        # ...so this one neither waits nor takes them.
        assert time.monotonic() - t0 < 2
        assert sorted(c.id for c in claims) == ids[3:]


@pytest.mark.postgres
def test_postgres_expired_lease_comes_back_and_a_lost_lease_is_not_recorded(pg_db: DB) -> None:
    claims_and_leases(pg_db)


def test_retry_result_goes_back_to_pending_with_backoff_then_dead(sqlite_db: DB) -> None:
    settings = fast_settings(delivery_max_attempts=2, delivery_backoff_base=10, delivery_backoff_cap=10)
    (i,) = sqlite_db.add_deliveries(URIS[:1])
    fail = AttemptResult(RETRY, 500, "HTTP 500", None, 3, "j")
    (c,) = outbox.claim_due(sqlite_db.factory, "w", 1, 30)
    before = utcnow()
    assert outbox.record_result(sqlite_db.factory, c, fail, "w", settings) == PENDING
    row = sqlite_db.get(i)
    assert row.state == PENDING and row.attempts == 1 and row.last_status == 500
    assert before <= row.next_attempt_at <= before + dt.timedelta(seconds=11)
    with sqlite_db.factory.begin() as s:
        s.execute(update(Delivery).values(next_attempt_at=utcnow()))
    (c,) = outbox.claim_due(sqlite_db.factory, "w", 1, 30)
    assert outbox.record_result(sqlite_db.factory, c, fail, "w", settings) == DEAD
    row = sqlite_db.get(i)
    assert row.state == DEAD and row.completed_at is not None
    assert [a.outcome for a in row.attempt_log] == ["retry", "dead"]


def test_operator_retry_summary_and_listing(sqlite_db: DB) -> None:
    ids = sqlite_db.add_deliveries(URIS[:4])
    with sqlite_db.factory.begin() as s:
        s.execute(update(Delivery).where(Delivery.id == ids[0]).values(state=FAILED))
        s.execute(update(Delivery).where(Delivery.id == ids[1]).values(state=DEAD))
        s.execute(update(Delivery).where(Delivery.id == ids[2]).values(state=DELIVERED))
    with sqlite_db.factory() as s:
        assert outbox.summary(s) == {PENDING: 1, IN_FLIGHT: 0, DELIVERED: 1, FAILED: 1, DEAD: 1}
        assert [d.id for d in outbox.list_deliveries(s, [FAILED, DEAD])] == ids[:2]
    with sqlite_db.factory.begin() as s:
        assert outbox.retry_now(s, ids=[ids[0]]) == 1
        assert outbox.retry_now(s) == 1  # the dead one; delivered rows are untouched
    with sqlite_db.factory() as s:
        assert outbox.summary(s)[PENDING] == 3
    assert {c.id for c in outbox.claim_due(sqlite_db.factory, "w", 10, 30)} == {ids[0], ids[1], ids[3]}
