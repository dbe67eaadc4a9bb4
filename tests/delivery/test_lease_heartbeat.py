"""The lease heartbeat: a live dispatcher renews the leases of every row it holds, in one
UPDATE, so a lease shorter than an attempt neither lets another claimer take a row that is
still being delivered nor breaks the fence of the result (which carries the renewed lease).
Real loopback RP, SQLite and PostgreSQL outboxes."""

from __future__ import annotations

import dataclasses
import time

from oidc_logout.backchannel.request import DELIVERED as R_DELIVERED
from oidc_logout.backchannel.request import AttemptResult
from oidc_logout.delivery import outbox
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.storage.models import DELIVERED, IN_FLIGHT

from .conftest import DB, Reply, RPServer, fast_settings


def test_renewal_extends_only_rows_still_in_flight_and_owned(outbox_db: DB) -> None:
    ids = outbox_db.add_deliveries([f"http://127.0.0.1:9/rp{i}" for i in range(3)])
    mine = outbox.claim_due(outbox_db.factory, "me", 2, 5, ids=ids[:2])
    theirs = outbox.claim_due(outbox_db.factory, "them", 1, 5, ids=ids[2:])
    done = mine[1]
    result = AttemptResult(R_DELIVERED, 200, None, None, 1, "j")
    assert outbox.record_result(outbox_db.factory, done, result, "me", fast_settings()) == DELIVERED

    renewed, until = outbox.renew_leases(outbox_db.factory, "me", [c.id for c in mine + theirs], 60)

    assert renewed == {mine[0].id}  # not the finished row, not another owner's row
    assert outbox_db.get(mine[0].id).lease_until == until
    assert outbox_db.get(theirs[0].id).lease_until == theirs[0].lease_until
    assert outbox_db.get(done.id).state == DELIVERED and outbox_db.get(done.id).lease_until is None


def test_result_recorded_after_a_renewal_passes_the_fence(outbox_db: DB) -> None:
    """The renewed lease_until is the row's new fencing token: a result written with the
    claim's original lease is refused (it could be a stale claimant's), one written with the
    renewed lease is recorded."""
    (claim,) = outbox.claim_due(outbox_db.factory, "me", 1, 5, ids=outbox_db.add_deliveries(["http://x/1"]))
    _renewed, until = outbox.renew_leases(outbox_db.factory, "me", [claim.id], 60)
    result = AttemptResult(R_DELIVERED, 200, None, None, 1, "j")
    stale = outbox.record_result(outbox_db.factory, claim, result, "me", fast_settings())
    assert stale == outbox.LOST
    fresh = dataclasses.replace(claim, lease_until=until)
    assert outbox.record_result(outbox_db.factory, fresh, result, "me", fast_settings()) == DELIVERED


def test_attempt_longer_than_the_lease_is_not_taken_over_by_another_claimer(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """A 1 s lease and an RP that takes 3 s: without renewal a second dispatcher would claim
    the row after 1 s and deliver it again; with the heartbeat it never can, and the first
    dispatcher's result is recorded (its fence follows the renewed lease)."""
    ids = outbox_db.add_deliveries([rp.url("/slow", Reply(200, delay=3.0))])
    settings = fast_settings(delivery_lease_seconds=1, delivery_timeout=5.0)
    first = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, owner="first", poll_interval=0.05)
    dispatchers.append(first)
    assert first.deliver_now(ids) == ids
    assert rp.wait_for(1, timeout=10, path="/slow")
    # Another claimer polls for expired leases for the whole attempt (and a margin).
    taken: list[int] = []
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline and outbox_db.get(ids[0]).state == IN_FLIGHT:
        taken += [c.id for c in outbox.claim_due(outbox_db.factory, "other", 10, 1)]
        time.sleep(0.1)
    assert first.wait_for(ids, 10)
    assert taken == []
    row = outbox_db.get(ids[0])
    assert row.state == DELIVERED and row.attempts == 1
    assert [a.worker for a in row.attempt_log] == ["first"]
    assert len(rp.hits("/slow")) == 1


def test_stalled_dispatcher_does_not_attempt_queued_claims_whose_lease_ran_out(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """A live dispatcher whose renewals stall (here: its heartbeat never runs) loses its leases
    after one lease; another worker re-claims the rows. When the stall ends, the claims it had
    queued but not started are NOT attempted by it (only the other worker's attempt reaches the
    RP): a stalled worker's repeats stay bounded by the attempts it had running."""
    # A 3 s lease: with 1 s, a CI machine under load stalled this process for over a second
    # between the claim and the first attempt, and both claims were let go before /slow ran.
    slow = rp.url("/slow", Reply(200, delay=5.0))
    queued = rp.url("/queued", Reply(200))
    ids = outbox_db.add_deliveries([slow, queued])
    settings = fast_settings(delivery_lease_seconds=3, delivery_timeout=10.0, delivery_concurrency=1)
    stalled = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, owner="stalled", poll_interval=0.05)
    dispatchers.append(stalled)
    stalled.renew_interval = 3600.0  # the stall: no renewal happens during this test
    assert sorted(stalled.deliver_now(ids)) == sorted(ids)  # one slot: /slow runs, /queued waits
    assert rp.wait_for(1, timeout=10, path="/slow")
    time.sleep(3.2)  # both leases ran out
    (taken,) = outbox.claim_due(outbox_db.factory, "other", 10, 30, ids=[ids[1]])
    assert stalled.wait_for(ids[:1], 10)  # the running attempt ends (nobody took its row)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stalled.stats["lost"] < 1:
        time.sleep(0.05)  # the slot is free: the queued claim's turn

    assert rp.hits("/queued") == []  # the queued claim was let go, not repeated
    assert stalled.stats["lost"] == 1 and stalled.stats[DELIVERED] == 1
    row = outbox_db.get(taken.id)
    assert row.state == IN_FLIGHT and row.lease_owner == "other"
    result = AttemptResult(R_DELIVERED, 200, None, None, 1, "j")
    assert outbox.record_result(outbox_db.factory, taken, result, "other", settings) == DELIVERED
