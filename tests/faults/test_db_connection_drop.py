"""PostgreSQL connections killed under a running dispatcher (``pg_terminate_backend`` on
every backend of the database, several times, while deliveries are in progress): the worker
process survives the OperationalErrors, reconnects (pool_pre_ping) and every delivery still
ends ``delivered``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from oidc_logout.config import Settings
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.keys import KeyRing
from oidc_logout.storage.models import DELIVERED

from .conftest import (
    ISSUER,
    Receiver,
    WorkerProc,
    factory_for,
    seed_fanout,
    state_counts,
    wait_until,
)

FANOUT = 300
KILL_ROUNDS = 4


def _kill_backends(pg_databases: Any, dbname: str) -> int:
    with pg_databases.admin.connect() as c:
        return len(
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": dbname},
            ).all()
        )


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["worker", "embedded"])
def test_dropped_database_connections_during_dispatch_are_recovered_from(
    pg_url: str, pg_databases: Any, mode: str
) -> None:
    rp = Receiver(delay=0.02)
    factory = factory_for(pg_url)
    dbname = pg_url.rsplit("/", 1)[1]
    worker: WorkerProc | None = None
    dispatcher: Dispatcher | None = None
    try:
        term_id, _ids = seed_fanout(factory, sessions=FANOUT, uris=[rp.url("/bc")])
        if mode == "worker":
            worker = WorkerProc(
                pg_url, OIDC_LOGOUT_DELIVERY_CONCURRENCY="4", OIDC_LOGOUT_DELIVERY_BATCH_SIZE="8"
            )
        else:
            settings = Settings(
                issuer=ISSUER,
                database_url=pg_url,
                dev_mode=True,
                delivery_concurrency=4,
                delivery_batch_size=8,
                delivery_lease_seconds=2,
                delivery_backoff_base=0.05,
                delivery_backoff_cap=0.3,
                delivery_max_attempts=50,
            )
            dispatcher = Dispatcher(factory, KeyRing(factory), settings, poll_interval=0.1)
            dispatcher.start()
        assert wait_until(lambda: rp.total >= 20, 20, 0.02)
        killed = []
        for _ in range(KILL_ROUNDS):  # bounded: 4 rounds, 0.3 s apart
            killed.append(_kill_backends(pg_databases, dbname))
            time.sleep(0.3)
        last_kill = time.monotonic()
        assert sum(killed) > 0, "no backend was terminated: the test proved nothing"
        assert rp.total < FANOUT, "the connection drops must land during dispatch"
        ok = wait_until(lambda: state_counts(factory, term_id).get(DELIVERED, 0) == FANOUT, 45, 0.1)
        recovered_in = time.monotonic() - last_kill
        assert ok, (state_counts(factory, term_id), worker.log_tail() if worker else "")
        if worker is not None:
            assert worker.alive(), worker.log_tail()
            assert worker.terminate() == 0
            errors = [ln for ln in worker.lines if "OperationalError" in ln or "failed" in ln]
        else:
            assert dispatcher is not None and dispatcher._thread is not None
            assert dispatcher._thread.is_alive()
            errors = []
    finally:
        if worker is not None:
            worker.terminate()
        if dispatcher is not None:
            dispatcher.stop(5)
        rp.stop()
        factory.kw["bind"].dispose()
    assert state_counts(factory, term_id) == {DELIVERED: FANOUT}
    assert len(rp.per_sid) == FANOUT
    print(
        f"\n[pg_terminate_backend/{mode}] {KILL_ROUNDS} rounds killed {killed} backends; "
        f"all {FANOUT} delivered {recovered_in:.2f}s after the last kill; RP hits="
        f"{rp.total}, duplicates={rp.duplicates()}, worker error log lines={len(errors)}"
    )
