"""The logout burst (issue 15 item 2): rows a termination claims in its own transaction for the
local dispatcher (:meth:`Dispatcher.claim_for_delivery`, then :meth:`Dispatcher.adopt` after the
commit) run in up to ``delivery_logout_burst`` slots beyond ``delivery_concurrency``, within the
per-client and per-host bounds; they are durable leases like any claim. Real loopback RP, real
SQLite and PostgreSQL outboxes; concurrency is read off the RP's own counters."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from oidc_logout.delivery.dispatcher import BURST_HOLD_FACTOR, Dispatcher
from oidc_logout.storage.models import (
    DELIVERED,
    IN_FLIGHT,
    Delivery,
    DeliveryAttempt,
)

from .conftest import DB, Reply, RPServer, fast_settings, write_rows

#: The read timeout of these tests: their RPs answer in 0.1-0.5 s, and under CI load a 1 s
#: timeout turned a late answer into a retry that a dispatcher without a polling thread
#: never claims again (the burst test on PostgreSQL waited its 30 s for it).
ANSWER_WAIT = 10.0


def logout(db: DB, disp: Dispatcher, uris: list[str], **kw: bool) -> tuple[list[int], int]:
    """Write the rows and claim them for ``disp`` in one transaction, adopt after the commit."""
    with db.factory.begin() as s:
        ids = write_rows(s, uris, **kw)
        claims = disp.claim_for_delivery(s, ids)
    disp.adopt(claims)
    return ids, len(claims)


def test_a_logouts_rows_run_in_parallel_beyond_the_steady_state_slots(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """delivery_concurrency=2: twelve RPs of one logout are still POSTed in parallel (more than
    2 at once), and all arrive; the burst held them, nothing went back to the outbox."""
    uris = [rp.url(f"/rp{i}", Reply(200, delay=0.5)) for i in range(12)]
    settings = fast_settings(delivery_concurrency=2, delivery_logout_burst=64, delivery_timeout=ANSWER_WAIT)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings)  # no polling thread
    dispatchers.append(disp)
    ids, claimed = logout(outbox_db, disp, uris)
    assert claimed == 12
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.max_active > 2, rp.max_active
    assert disp.stats["deferred"] == 0


def test_a_burst_holds_more_rows_than_its_slots_and_runs_at_most_its_slots_at_once(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """delivery_logout_burst=3, no claim loop (a worker that is not elected): the transaction
    claims all 10 rows of the logout (up to 4 x 3 held), at most 3 attempts run at once (the
    burst's slots), and all arrive from this dispatcher alone."""
    uris = [rp.url(f"/held{i}", Reply(200, delay=0.2)) for i in range(10)]
    settings = fast_settings(delivery_concurrency=1, delivery_logout_burst=3, delivery_timeout=ANSWER_WAIT)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings)  # no polling thread
    dispatchers.append(disp)
    ids, claimed = logout(outbox_db, disp, uris)
    assert claimed == 10
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.max_active <= 3, rp.max_active
    assert disp.stats["delivered"] == 10 and disp.stats["deferred"] == 0


def test_the_host_bound_holds_in_a_burst_and_the_rest_waits_locally(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """Twelve RPs on one host, delivery_max_concurrent_per_host=3: never more than 3 POSTs at
    once reach it, every row arrives, and the rows over the bound waited in the dispatcher (no
    deferral back to the outbox, which another process might take and the waiting logout would
    have to look up in the database)."""
    uris = [rp.url(f"/h{i}", Reply(200, delay=0.2)) for i in range(12)]
    settings = fast_settings(
        delivery_concurrency=16, delivery_max_concurrent_per_host=3, delivery_timeout=ANSWER_WAIT
    )
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings)
    dispatchers.append(disp)
    ids, _ = logout(outbox_db, disp, uris)
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.max_active <= 3, rp.max_active
    assert disp.stats["deferred"] == 0


def test_the_client_bound_holds_in_a_burst(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """Six sessions of one client in one termination, delivery_max_concurrent_per_client=2: at
    most 2 of its attempts run at once."""
    uri = rp.url("/one-client", Reply(200, delay=0.2))
    settings = fast_settings(delivery_max_concurrent_per_client=2, delivery_timeout=ANSWER_WAIT)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings)
    dispatchers.append(disp)
    ids, _ = logout(outbox_db, disp, [uri] * 6, one_client=True)
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.max_active_by_path["/one-client"] <= 2, rp.max_active_by_path


def test_a_burst_claims_at_most_its_room_and_the_claim_loop_takes_the_rest(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """delivery_logout_burst=4: the burst holds up to 4 x its slots, so the transaction claims
    16 of 20 rows; the 4 others stay pending for the claim loop, which delivers them; each RP
    is told once."""
    uris = [rp.url(f"/r{i}", Reply(200, delay=0.1)) for i in range(20)]
    settings = fast_settings(delivery_concurrency=1, delivery_logout_burst=4, delivery_timeout=ANSWER_WAIT)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=0.05)
    dispatchers.append(disp)
    ids, claimed = logout(outbox_db, disp, uris)
    assert claimed == 4 * BURST_HOLD_FACTOR
    disp.start()
    disp.kick()
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    # Every POST is a recorded attempt of the one claim that held its row: per RP, as many
    # POSTs as attempts, numbered 1..n, all but the last a retry (a read timeout on a loaded
    # machine may add one; a row claimed twice would show two first attempts).
    with outbox_db.factory() as s:
        for i, row_id in enumerate(ids):
            log = s.execute(
                select(DeliveryAttempt.number, DeliveryAttempt.outcome)
                .where(DeliveryAttempt.delivery_id == row_id)
                .order_by(DeliveryAttempt.number)
            ).all()
            assert [n for n, _ in log] == list(range(1, len(log) + 1)), log
            assert [o for _, o in log] == ["retry"] * (len(log) - 1) + ["delivered"], log
            assert rp.count(f"/r{i}") == len(log)


def test_rows_claimed_by_a_process_that_died_after_the_commit_come_back_after_the_lease(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """The claim in the termination's transaction is a durable lease: if the process dies
    between the commit and the first POST, its rows are in_flight under its lease, and another
    dispatcher delivers them once the lease has expired (each exactly once)."""
    uris = [rp.url(f"/d{i}") for i in range(3)]
    dead = Dispatcher(outbox_db.factory, outbox_db.keyring, fast_settings(delivery_lease_seconds=1))
    dispatchers.append(dead)
    with outbox_db.factory.begin() as s:
        ids = write_rows(s, uris)
        claims = dead.claim_for_delivery(s, ids)  # committed, never adopted: the process died
    assert len(claims) == 3
    with outbox_db.factory() as s:
        rows = s.scalars(select(Delivery).where(Delivery.id.in_(ids))).all()
        assert {(r.state, r.lease_owner) for r in rows} == {(IN_FLIGHT, dead.owner)}
    other = Dispatcher(outbox_db.factory, outbox_db.keyring, fast_settings(), poll_interval=0.05)
    dispatchers.append(other)
    other.start()
    assert other.wait_for(ids, 15)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    with outbox_db.factory() as s:
        workers = set(s.scalars(select(DeliveryAttempt.worker).where(DeliveryAttempt.delivery_id.in_(ids))))
    assert workers == {other.owner}
    assert [rp.count(f"/d{i}") for i in range(3)] == [1, 1, 1]


def test_a_rolled_back_termination_leaves_no_claim_and_sends_nothing(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """The claim is part of the termination's transaction: if it rolls back, there is no row,
    no lease, nothing held by the dispatcher, and no RP hears of a logout that did not happen."""
    uris = [rp.url(f"/x{i}") for i in range(3)]
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, fast_settings(), poll_interval=0.05)
    dispatchers.append(disp)
    disp.start()
    ids: list[int] = []

    def failing_termination() -> None:
        with outbox_db.factory.begin() as s:
            ids.extend(write_rows(s, uris))
            assert len(disp.claim_for_delivery(s, ids)) == 3
            raise RuntimeError("the termination failed before its commit")

    with pytest.raises(RuntimeError):
        failing_termination()
    disp.kick()
    assert not rp.wait_for(1, 1.0)
    with outbox_db.factory() as s:
        assert s.scalars(select(Delivery.id).where(Delivery.id.in_(ids))).all() == []
    assert disp.held() == 0
