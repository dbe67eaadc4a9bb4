"""Bounds on what one logout can make the OP send to one target (issue 12 item 1): attempts
running at once per client and per target host, and retries per client. Real loopback RP,
real SQLite and PostgreSQL outboxes; "never more than" is read off the RP's own counters."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.storage.models import (
    DELIVERED,
    PENDING,
    Delivery,
)

from .conftest import DB, Reply, RPServer, fast_settings, write_rows


def one_client_rows(db: DB, uri: str, sessions: int) -> list[int]:
    """One client with ``sessions`` pending deliveries (one per OP session) to ``uri``."""
    with db.factory.begin() as s:
        return write_rows(s, [uri] * sessions, one_client=True)


def test_one_logout_to_thirty_clients_on_one_host_never_exceeds_the_host_bound(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """30 self-registered clients pointing at one host: at most
    delivery_max_concurrent_per_host POSTs reach it at once, and every row still arrives."""
    uris = [rp.url(f"/victim{i}", Reply(200, delay=0.2)) for i in range(30)]
    ids = outbox_db.add_deliveries(uris)
    # A read timeout well above the RP's 0.2 s: on a loaded test machine a 1 s timeout made
    # a late answer a retry (at-least-once: 33 POSTs for 30 rows), which is not this test's point.
    settings = fast_settings(
        delivery_concurrency=16, delivery_max_concurrent_per_host=3, delivery_timeout=10.0
    )
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=0.05)
    dispatchers.append(disp)
    disp.start()
    disp.deliver_now(ids)
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert sorted(r.path for r in rp.requests) == sorted(f"/victim{i}" for i in range(30))
    assert rp.max_active <= 3, rp.max_active


def test_many_sessions_of_one_client_never_exceed_the_client_bound(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """A client kill switch with 12 sessions: at most delivery_max_concurrent_per_client
    attempts of that client run at once."""
    ids = one_client_rows(outbox_db, rp.url("/one-client", Reply(200, delay=0.2)), 12)
    settings = fast_settings(
        delivery_concurrency=16, delivery_max_concurrent_per_client=2, delivery_max_concurrent_per_host=64
    )
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=0.05)
    dispatchers.append(disp)
    counts = disp.run_once(timeout=30)
    assert counts == {"delivered": 12}, counts
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.max_active_by_path["/one-client"] <= 2, rp.max_active_by_path


def test_a_failing_client_gets_at_most_its_retry_budget(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """An RP answering 500 to 5 notifications: 5 first attempts, then at most
    delivery_client_retry_budget retries per window; the other rows wait (pending), none is
    dropped. Without the budget, backoff of 10-50 ms would retry dozens of times."""
    ids = one_client_rows(outbox_db, rp.url("/down", Reply(500)), 5)
    settings = fast_settings(
        delivery_max_attempts=100, delivery_client_retry_budget=3, delivery_client_retry_window=60.0
    )
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=0.05)
    dispatchers.append(disp)
    disp.start()
    disp.deliver_now(ids)
    assert rp.wait_for(5 + 3, 10)
    # A ninth POST would come within milliseconds without the budget: wait for it, bounded.
    assert not rp.wait_for(5 + 3 + 1, 2.0), len(rp.requests)
    with outbox_db.factory() as s:
        states = set(s.scalars(select(Delivery.state).where(Delivery.id.in_(ids))))
    assert states <= {PENDING, "in_flight"}, states


def test_a_recovered_client_gets_its_backlog_at_once(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """The retry budget still probes a failing RP (a token bucket); the first accepted retry
    makes the client's waiting rows due at once instead of one per refill. 6 rows: 6 first
    attempts and 2 budgeted retries fail, the probe after a refill succeeds, and the 5 other
    rows follow immediately - 14 POSTs, none more."""
    ids = one_client_rows(outbox_db, rp.url("/back", *[Reply(500)] * 8, Reply(200)), 6)
    settings = fast_settings(
        delivery_max_attempts=100,
        delivery_client_retry_budget=2,
        delivery_client_retry_window=20.0,  # one probe per 10 s
        delivery_lease_seconds=5,  # a result SQLite could not record comes back in 5 s
    )
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=0.05)
    dispatchers.append(disp)
    disp.start()
    disp.deliver_now(ids)
    # Without the resume the 5 others would follow one per 10 s refill (50 s).
    assert disp.wait_for(ids, 25), [outbox_db.get(i).state for i in ids]
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.count("/back") == 14, rp.count("/back")


def test_a_claim_given_back_and_claimed_again_at_once_keeps_the_newer_claim(
    outbox_db: DB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferred claim is given back in one transaction and forgotten here after it; a row due
    at once (a recovered client's resumed backlog) can be claimed again in between. Forgetting
    the first claim must leave the second one held, with its lease renewed: dropping it left
    the row in_flight under a lease the heartbeat renewed forever, never attempted (the
    recovered-client test above failed so under load, 1 row of 6)."""
    from concurrent.futures import Future

    from oidc_logout.delivery import dispatcher as dispatcher_module
    from oidc_logout.delivery import outbox

    (row_id,) = one_client_rows(outbox_db, "http://127.0.0.1:9/back", 1)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, fast_settings(), poll_interval=0.05)
    lease = disp.settings.delivery_lease_seconds

    def hold(claim: outbox.ClaimedDelivery) -> Future[str]:
        """What Dispatcher._submit registers for a claim, without starting its attempt."""
        fut: Future[str] = Future()
        disp._leases[claim.id] = claim.lease_until  # type: ignore[assignment]
        disp._lease_claim[claim.id] = claim
        disp._inflight[claim.id] = (claim, fut)
        return fut

    (first,) = outbox.claim_due(outbox_db.factory, disp.owner, 1, lease, ids=[row_id])
    first_fut = hold(first)
    again: list[tuple[outbox.ClaimedDelivery, Future[str]]] = []
    give_back = outbox.defer

    def defer_then_claimed_again(*args: Any, **kwargs: Any) -> int:
        n = give_back(*args, **kwargs)  # committed: the row is pending and due
        (second,) = outbox.claim_due(outbox_db.factory, disp.owner, 1, lease, ids=[row_id])
        again.append((second, hold(second)))
        return n

    monkeypatch.setattr(dispatcher_module.outbox, "defer", defer_then_claimed_again)
    disp._defer([(first, first_fut)], 0.0)

    ((second, second_fut),) = again
    assert first_fut.result(0) == "deferred"
    assert disp._inflight[row_id] == (second, second_fut) and not second_fut.done()
    assert disp._leases.get(row_id) == second.lease_until
    assert outbox_db.get(row_id).state == "in_flight"


def _hold_outbox_writes(db: DB, ids: list[int]) -> Any:
    """An open transaction of another connection that keeps the dispatcher from recording
    results for ``ids``: SQLite's write lock, or PostgreSQL row locks on those rows. The
    caller rolls it back."""
    conn = db.engine.connect()
    if db.engine.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        trans = conn.begin()
        conn.execute(select(Delivery.id).where(Delivery.id.in_(ids)).with_for_update())
        conn.info["trans"] = trans
    return conn


def test_a_clients_next_attempt_starts_while_the_last_result_waits_for_the_database(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """delivery_max_concurrent_per_client=1 bounds the POSTs in flight to a client, not its
    results being written: with the outbox locked by another transaction once both rows
    are claimed, the RP gets its second POST while the first result cannot be recorded.
    (Held through the group commit, the client's one slot kept the second attempt waiting
    for the database: 60% of a bulk termination's slot time.)"""
    ids = one_client_rows(outbox_db, rp.url("/next", Reply(200)), 2)
    settings = fast_settings(delivery_max_concurrent_per_client=1)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings)  # no polling thread
    dispatchers.append(disp)
    with outbox_db.factory.begin() as s:
        claims = disp.claim_for_delivery(s, ids)
    assert len(claims) == 2
    lock = _hold_outbox_writes(outbox_db, ids)
    try:
        disp.adopt(claims)
        assert rp.wait_for(2, 10, path="/next"), rp.count("/next")
        assert {outbox_db.get(i).state for i in ids} == {"in_flight"}  # neither recorded yet
    finally:
        lock.rollback()
        lock.close()
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.max_active_by_path["/next"] <= 1, rp.max_active_by_path


def test_a_batch_over_three_clients_at_their_bound_waits_here_and_is_not_given_back(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """Three clients with 6 rows each and a bound of 2 per client: one claim takes all 18
    (capacity 2 x 16), 6 run and 12 wait in the dispatcher for their client's slot. Nothing
    goes back to the outbox (with one bound's worth waiting, 6 did, each a release and a
    claim again: 1,200 of a 3,000-row bulk termination)."""
    uris = [rp.url(f"/c{c}", Reply(200, delay=0.05)) for c in range(3)]
    ids = [i for uri in uris for i in one_client_rows(outbox_db, uri, 6)]
    settings = fast_settings(delivery_max_concurrent_per_client=2, delivery_timeout=10.0)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings)  # no polling thread
    dispatchers.append(disp)
    counts = disp.run_once(timeout=30)
    assert counts == {"delivered": 18}, counts
    assert disp.stats.get("deferred", 0) == 0, disp.stats
    assert all(rp.max_active_by_path[f"/c{c}"] <= 2 for c in range(3)), rp.max_active_by_path
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}


def test_a_kill_switch_of_one_client_is_not_claimed_and_given_back_over_and_over(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """60 rows of one client, a bound of 2: after the first claim (up to 2 x 16 rows, of which
    6 run or wait and the rest go back), finished attempts claim only what the client can
    take here, so the outbox gets back at most one claim's surplus. (Claims sized to the
    free capacity gave back 1.4 rows per row delivered: 2,764 releases for 2,000 rows.)"""
    ids = one_client_rows(outbox_db, rp.url("/kill", Reply(200)), 60)
    settings = fast_settings(delivery_max_concurrent_per_client=2, delivery_timeout=10.0)
    # A poll (a full claim) every 5 s: the run, about a second, sees none or one.
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=5.0)
    dispatchers.append(disp)
    disp.start()
    assert disp.wait_for(ids, 60)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert rp.count("/kill") == 60
    # The first claim's surplus (32 - 6), and as much again for a poll of a slow run.
    assert disp.stats.get("deferred", 0) <= 2 * 26, disp.stats
    assert rp.max_active_by_path["/kill"] <= 2, rp.max_active_by_path
