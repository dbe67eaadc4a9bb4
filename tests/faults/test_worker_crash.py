"""``kill -9`` of a delivery worker in the middle of a 1,000-delivery fan-out: nothing is
lost, and the only duplicates are the attempts that were running under the dead worker's
lease (at-least-once delivery with a bounded number of repeats)."""

from __future__ import annotations

import time

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
