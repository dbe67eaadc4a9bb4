"""``kill -9`` of a delivery worker in the middle of a 1,000-delivery fan-out: nothing is
lost, and the only duplicates are the attempts that were running under the dead worker's
lease (at-least-once delivery with a bounded number of repeats)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from oidc_logout.storage.models import DELIVERED

from .conftest import Receiver, WorkerProc, factory_for, seed_fanout, state_counts, wait_until

FANOUT = 1000
CONCURRENCY = 8
BATCH = 16
LEASE = 2


@pytest.mark.postgres
def test_kill_9_mid_fanout_loses_nothing_and_duplicates_stay_within_the_dead_lease(pg_url: str) -> None:
    rp = Receiver(delay=0.03)
    factory = factory_for(pg_url)
    env = dict(
        OIDC_LOGOUT_DELIVERY_CONCURRENCY=str(CONCURRENCY),
        OIDC_LOGOUT_DELIVERY_BATCH_SIZE=str(BATCH),
        OIDC_LOGOUT_DELIVERY_LEASE_SECONDS=str(LEASE),
    )
    workers: list[WorkerProc] = []
    try:
        # 1,000 OP sessions x 1 RP, ended by ONE termination (by subject).
        term_id, ids = seed_fanout(factory, sessions=FANOUT, uris=[rp.url("/bc")])
        assert len(ids) == FANOUT

        first = WorkerProc(pg_url, **env)
        workers.append(first)
        assert wait_until(lambda: rp.total >= FANOUT // 4, 30, 0.02), first.log_tail()
        before_kill = state_counts(factory, term_id)
        first.kill9()
        killed_at = time.monotonic()
        delivered_at_kill = before_kill.get(DELIVERED, 0)
        assert delivered_at_kill < FANOUT, "the kill must land mid fan-out"
        hits_at_kill = rp.total

        second = WorkerProc(pg_url, cli=True, **env)  # the ``oidc-logout worker`` entry point
        workers.append(second)
        assert any("dispatcher" in ln and "started" in ln for ln in second.lines), (
            "oidc-logout worker must log its start"
        )
        assert wait_until(lambda: state_counts(factory, term_id).get(DELIVERED, 0) == FANOUT, 60, 0.1), (
            state_counts(factory, term_id),
            second.log_tail(),
        )
        recovered_in = time.monotonic() - killed_at
        assert second.terminate() == 0
    finally:
        for w in workers:
            w.terminate()
        rp.stop()
        factory.kw["bind"].dispose()

    counts = state_counts(factory, term_id)
    assert counts == {DELIVERED: FANOUT}, counts
    # Every session's RP heard of it at least once ...
    assert len(rp.per_sid) == FANOUT
    # ... and a repeat only for attempts that were running under the dead worker's lease:
    # at most the worker's concurrency (claims queued but not started never reached the RP).
    dupes = rp.duplicates()
    print(
        f"\n[kill -9] fan-out={FANOUT} concurrency={CONCURRENCY} batch={BATCH} "
        f"lease={LEASE}s: delivered before kill={delivered_at_kill}, RP hits at kill="
        f"{hits_at_kill}, total RP hits={rp.total}, duplicates={dupes}, "
        f"all delivered {recovered_in:.2f}s after the kill"
    )
    assert dupes <= min(CONCURRENCY, BATCH), dupes
    # Each attempt carried a fresh jti, repeats included.
    assert len(rp.jtis) == rp.total


# With the DEFAULT lease settings (issue 17 item 2: "after kill -9 of a worker, every row it
# held is delivered by the others within 15 s with default settings"). The dead worker's rows
# are claimable again at its last lease_until, at most ``delivery_lease_seconds`` (5 s) after
# the kill (the heartbeat renews every lease/4, so lease_until <= last renewal + lease <= kill +
# lease); the survivor claims expired leases before any other due row and attempts them oldest
# due first. The bound, asserted as such: it leaves 10 s for the survivor's poll, its
# claim and the attempts on a loaded 2-core machine (measured, docs/performance.md).
RECOVERY_BOUND = 15.0
DEFAULT_FANOUT = 1000
SLOW_RP = 0.05


@pytest.mark.postgres
def test_kill_9_with_default_settings_is_recovered_within_15_seconds(pg_url: str) -> None:
    import datetime as dt

    from sqlalchemy import select

    from oidc_logout.config import Settings
    from oidc_logout.storage.models import IN_FLIGHT, Delivery

    defaults = Settings()
    lease = defaults.delivery_lease_seconds
    rp = Receiver(delay=SLOW_RP)
    factory = factory_for(pg_url)
    # Undo the fault fixture's short timings: every delivery setting at its default.
    env = {
        f"OIDC_LOGOUT_{name.upper()}": str(getattr(defaults, name))
        for name in (
            "delivery_lease_seconds",
            "delivery_timeout",
            "delivery_connect_timeout",
            "delivery_backoff_base",
            "delivery_backoff_cap",
            "delivery_max_attempts",
            "delivery_concurrency",
            "delivery_batch_size",
        )
    }
    workers: list[WorkerProc] = []
    try:
        term_id, _ids = seed_fanout(factory, sessions=DEFAULT_FANOUT, uris=[rp.url("/bc")])
        victim = WorkerProc(pg_url, cli=True, **env)
        survivor = WorkerProc(pg_url, cli=True, **env)
        workers += [victim, survivor]
        assert wait_until(lambda: rp.total >= DEFAULT_FANOUT // 4, 60, 0.02), victim.log_tail()
        victim.kill9()
        killed_at = dt.datetime.now(dt.UTC)
        with factory() as db:
            held = db.execute(
                select(Delivery.id, Delivery.lease_until).where(
                    Delivery.termination_id == term_id,
                    Delivery.state == IN_FLIGHT,
                    Delivery.lease_owner.like(f"%:{victim.pid}:%"),
                )
            ).all()
        assert state_counts(factory, term_id).get(DELIVERED, 0) < DEFAULT_FANOUT, (
            "the kill must land mid fan-out"
        )
        held_ids = [i for i, _until in held]

        def held_states() -> Counter[tuple[str, str | None]]:
            with factory() as db:
                rows = db.execute(
                    select(Delivery.state, Delivery.lease_owner).where(Delivery.id.in_(held_ids))
                ).all()
            return Counter((state, owner) for state, owner in rows)

        # The dead worker's rows first (the requirement, asserted below from completed_at) ...
        assert wait_until(lambda: all(st == DELIVERED for st, _o in held_states()), 60, 0.1), (
            held_states(),
            survivor.log_tail(),
        )
        # ... then the rest of the fan-out, at whatever pace the (loaded) machine allows.
        assert wait_until(
            lambda: state_counts(factory, term_id).get(DELIVERED, 0) == DEFAULT_FANOUT, 600, 0.5
        ), (state_counts(factory, term_id), survivor.log_tail())
        assert survivor.terminate() == 0
        with factory() as db:
            completed = dict(
                db.execute(
                    select(Delivery.id, Delivery.completed_at).where(Delivery.termination_id == term_id)
                ).all()
            )
            sids = set(db.scalars(select(Delivery.sid).where(Delivery.termination_id == term_id)))
    finally:
        for w in workers:
            w.terminate()
        rp.stop()
        factory.kw["bind"].dispose()

    assert state_counts(factory, term_id) == {DELIVERED: DEFAULT_FANOUT}
    # Only this fan-out's requests: on a shared machine a stray request of another test's
    # process can reach a reused loopback port (seen: two requests without a sid).
    per_sid = {sid: n for sid, n in rp.per_sid.items() if sid in sids}
    assert len(per_sid) == DEFAULT_FANOUT  # nothing lost
    dupes = sum(n - 1 for n in per_sid.values())
    assert dupes <= defaults.delivery_concurrency, dupes  # the dead worker's running attempts
    # The lease math. Held rows were renewed by the heartbeat, so none is leased further
    # than one lease beyond the kill (clock granularity: 1 s).
    assert held, "the killed worker held rows"
    assert all(until <= killed_at + dt.timedelta(seconds=lease + 1) for _id, until in held), held
    # ... and every one of them was delivered by the survivor within 15 s of the kill.
    held_done = max(completed[i] for i, _until in held) - killed_at
    last_done = max(completed.values()) - killed_at
    print(
        f"\n[kill -9, defaults] fan-out={DEFAULT_FANOUT} lease={lease}s concurrency="
        f"{defaults.delivery_concurrency}: dead worker held {len(held)} rows; its rows delivered "
        f"{held_done.total_seconds():.2f}s after the kill, the whole fan-out "
        f"{last_done.total_seconds():.2f}s after; duplicates={dupes}"
    )
    assert held_done <= dt.timedelta(seconds=RECOVERY_BOUND), (held_done, RECOVERY_BOUND)
