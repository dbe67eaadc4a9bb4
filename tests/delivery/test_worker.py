"""Standalone worker processes on PostgreSQL: several share the outbox without delivering a
row twice, and SIGTERM stops them cleanly (finish in flight, exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from oidc_logout.storage.models import DELIVERED, PENDING

from .conftest import DB, ISSUER, Reply, RPServer

ROOT = Path(__file__).resolve().parents[2]


def start_worker(engine: Engine, **env: str) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OIDC_LOGOUT_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "OIDC_LOGOUT_ISSUER": ISSUER,
        "OIDC_LOGOUT_DEV_MODE": "1",
        "OIDC_LOGOUT_DELIVERY_CONCURRENCY": "4",
        "OIDC_LOGOUT_DELIVERY_TIMEOUT": "1.0",
        "OIDC_LOGOUT_DELIVERY_CONNECT_TIMEOUT": "1.0",
        "OIDC_LOGOUT_DELIVERY_BACKOFF_BASE": "0.01",
        "OIDC_LOGOUT_DELIVERY_BACKOFF_CAP": "0.05",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "oidc_logout.delivery.worker"],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    for line in proc.stderr:  # wait until it polls
        if "dispatcher" in line and "started" in line:
            break
        if time.monotonic() > deadline:
            break
    # Keep draining its log so a full pipe can never block the worker.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def stop(proc: subprocess.Popen[str], timeout: float = 10) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.postgres
def test_two_worker_processes_deliver_every_row_exactly_once(
    pg_db: DB, pg_engine: Engine, rp: RPServer
) -> None:
    workers = [start_worker(pg_engine), start_worker(pg_engine)]
    try:
        uris = [rp.url(f"/w{i}", Reply(200, delay=0.2)) for i in range(24)]
        uris.append(rp.url("/wflaky", Reply(500), Reply(200)))
        ids = pg_db.add_deliveries(uris)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(pg_db.get(i).state == DELIVERED for i in ids):
                break
            time.sleep(0.1)
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0]
    rows = [pg_db.get(i) for i in ids]
    assert all(r.state == DELIVERED for r in rows)
    assert all(len(r.attempt_log) == 1 for r in rows[:-1])  # never delivered twice
    assert len(rp.hits("/wflaky")) == 2 and rows[-1].attempts == 2
    assert len({a.worker for r in rows for a in r.attempt_log}) == 2  # both took part
    assert sum(len(rp.hits(f"/w{i}")) for i in range(24)) == 24


@pytest.mark.postgres
def test_sigterm_finishes_in_flight_deliveries_and_exits_zero(
    pg_db: DB, pg_engine: Engine, rp: RPServer
) -> None:
    worker = start_worker(pg_engine, OIDC_LOGOUT_DELIVERY_CONCURRENCY="1")
    ids = pg_db.add_deliveries([rp.url("/slow", Reply(200, delay=0.6)), rp.url("/queued")])
    assert rp.wait_for(1, 10, path="/slow")
    t0 = time.monotonic()
    assert stop(worker) == 0
    assert time.monotonic() - t0 < 5
    slow, queued = (pg_db.get(i) for i in ids)
    assert slow.state == DELIVERED  # the in-flight attempt was finished and recorded
    assert queued.state in (DELIVERED, PENDING) and queued.lease_owner is None
