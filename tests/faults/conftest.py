"""Fault-injection fixtures: real worker processes, real PostgreSQL databases, real loopback
RP receivers (the shared :class:`oidc_logout.testing.CaptureServer`) that can be stopped and
restarted on the same port.

Every loop here is bounded in iterations and in wall-clock time.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from oidc_logout.keys import ensure_keys
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import Client, Delivery, OPSession, SessionParticipant
from oidc_logout.storage.schema import make_engine, upgrade
from oidc_logout.termination import by_subject, terminate
from oidc_logout.testing import CaptureServer, Reply

ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://op.faults.test"


# --------------------------------------------------------------------------- RP receiver


def token_claims(raw: str) -> dict[str, Any]:
    """The payload of a compact JWS, unverified (the RP here only counts what it got)."""
    payload = raw.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Receiver(CaptureServer):
    """A loopback back-channel logout endpoint (the shared capture server) answering every
    request with ``status`` after ``delay`` seconds, with per-``sid`` counts of what it got.
    ``stop()`` refuses connections; ``start()`` listens again on the same port."""

    def __init__(self, port: int = 0, delay: float = 0.0, status: int = 200) -> None:
        super().__init__(port=port, default=Reply(status, {"Cache-Control": "no-store"}, delay=delay))

    @property
    def per_sid(self) -> Counter[str]:
        return Counter(r.sid or "?" for r in self.requests)

    @property
    def jtis(self) -> set[str]:
        return {r.jti for r in self.requests if r.jti}

    @property
    def total(self) -> int:
        return self.count()

    @property
    def first_at(self) -> float | None:
        reqs = self.requests
        return reqs[0].at if reqs else None

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.per_sid.values() if n > 1)


# --------------------------------------------------------------------------- databases


@pytest.fixture
def pg_url(pg_databases: Any) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for this test (dropped afterwards)."""
    url = pg_databases.new()
    yield url
    pg_databases.drop(url)


def factory_for(url: str, **engine_kw: Any) -> sessionmaker[Session]:
    """A session factory on ``url``; a SQLite file is migrated first (the PostgreSQL
    databases come from a migrated template)."""
    engine = make_engine(url, **engine_kw)
    if url.startswith("sqlite"):
        upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)


def seed_fanout(
    factory: sessionmaker[Session], *, sessions: int, uris: list[str], subject: str = "alice"
) -> tuple[str, list[int]]:
    """``sessions`` live OP sessions of ``subject``, each with one participant per URI (one
    client per URI), then ONE real termination by subject. Returns (termination id, the
    back-channel delivery ids it wrote)."""
    now = utcnow()
    with factory.begin() as db:
        ensure_keys(db, ("RS256", "ES256"))
        cids = []
        for i, uri in enumerate(uris):
            cid = f"rp-{i}-{uuid.uuid4().hex[:6]}"
            cids.append(cid)
            db.add(
                Client(
                    client_id=cid,
                    client_name=cid,
                    redirect_uris=[],
                    backchannel_logout_uri=uri,
                    backchannel_logout_session_required=True,
                )
            )
        db.flush()
        sids = [f"sid-{n:05d}-{uuid.uuid4().hex[:8]}" for n in range(sessions)]
        db.add_all(
            OPSession(sid=s, subject=subject, auth_time=now, created_at=now, last_seen_at=now) for s in sids
        )
        db.flush()
        db.add_all(SessionParticipant(sid=s, client_id=c) for s in sids for c in cids)
    with factory.begin() as db:
        # The whole fan-out written in this one transaction (no chunks after commit): these
        # tests are about delivering it.
        term = terminate(
            db, by_subject(subject), reason="fault test", initiator="test", inline_limit=sessions + 1
        )
        term_id = term.id
        ids = list(db.scalars(select(Delivery.id).where(Delivery.termination_id == term_id)))
    return term_id, ids


def state_counts(factory: sessionmaker[Session], term_id: str | None = None) -> dict[str, int]:
    with factory() as db:
        q = select(Delivery.state, func.count()).group_by(Delivery.state)
        if term_id:
            q = q.where(Delivery.termination_id == term_id)
        return {s: int(n) for s, n in db.execute(q)}


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``pred`` (exceptions count as False) until true or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------- worker processes


class WorkerProc:
    """``oidc-logout worker`` as a real child process; its log is drained into ``lines``."""

    def __init__(self, database_url: str, *, cli: bool = False, **env: str) -> None:
        environ = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OIDC_LOGOUT_DATABASE_URL": database_url,
            "OIDC_LOGOUT_ISSUER": ISSUER,
            "OIDC_LOGOUT_DEV_MODE": "true",
            "OIDC_LOGOUT_DELIVERY_LEASE_SECONDS": "2",
            "OIDC_LOGOUT_DELIVERY_TIMEOUT": "2.0",
            "OIDC_LOGOUT_DELIVERY_CONNECT_TIMEOUT": "1.0",
            "OIDC_LOGOUT_DELIVERY_BACKOFF_BASE": "0.05",
            "OIDC_LOGOUT_DELIVERY_BACKOFF_CAP": "0.3",
            "OIDC_LOGOUT_DELIVERY_MAX_ATTEMPTS": "50",
            **env,
        }
        args = [sys.executable, "-m", "oidc_logout.delivery.worker"]
        if cli:
            # Exactly what the ``oidc-logout worker`` console script runs (cli.main); it must
            # log on its own (the start line below is how we know it is polling).
            args = [
                sys.executable,
                "-c",
                "import sys; from oidc_logout.cli import main; sys.exit(main(['worker']))",
            ]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(args, env=environ, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.started = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        self.started.wait(20)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if "dispatcher" in line and "started" in line:
                self.started.set()
        self.started.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])
