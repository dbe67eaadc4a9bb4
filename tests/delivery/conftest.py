"""Fixtures for delivery tests: real loopback RP receivers, SQLite and PostgreSQL outboxes.

RP receivers are the shared capture server (:class:`oidc_logout.testing.CaptureServer`, a real
HTTP server on 127.0.0.1, port 0) driven by a per-path script of replies
(200/204/400/500-then-200/429+Retry-After/hang/redirect/huge body). Databases are
real: a SQLite file per test, and one dedicated PostgreSQL *database* per test session
(created from the shared ``test`` database and dropped afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from oidc_logout.config import Settings
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.keys import KeyRing, ensure_keys
from oidc_logout.storage.models import (
    BACKCHANNEL,
    Client,
    Delivery,
    DeliveryAttempt,
    SigningKey,
    Termination,
)
from oidc_logout.storage.schema import make_engine, upgrade
from oidc_logout.testing import CapturedRequest, CaptureServer, Reply

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
ISSUER = "https://op.example.test"


# --------------------------------------------------------------------------- RP receivers


#: The one capture server (oidc_logout/testing.py), under the names these tests use.
RPServer = CaptureServer
Received = CapturedRequest


@pytest.fixture
def rp() -> Iterator[CaptureServer]:
    server = CaptureServer()  # backlog 1024: 50 simultaneous connects must not hit it
    yield server
    server.stop()


# --------------------------------------------------------------------------- databases


def fast_settings(**changes: Any) -> Settings:
    """Settings with small timeouts and backoffs, loopback admitted (dev mode)."""
    base = Settings(
        issuer=ISSUER,
        dev_mode=True,
        delivery_timeout=1.0,
        delivery_connect_timeout=1.0,
        delivery_max_attempts=4,
        delivery_backoff_base=0.01,
        delivery_backoff_cap=0.05,
        delivery_retry_after_cap=600.0,
        delivery_concurrency=16,
        delivery_lease_seconds=30,
        logout_token_lifetime=120,
        max_response_bytes=64 * 1024,
        # Every test RP lives on 127.0.0.1: one host. The per-host bound has its own tests.
        delivery_max_concurrent_per_host=64,
        delivery_initial_concurrent_per_host=64,
    )
    return base.replace(**changes)


class DB:
    """A migrated database with signing keys, plus helpers to create outbox rows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.factory: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self.keyring = KeyRing(self.factory)
        self._n = 0

    def ensure_keys(self) -> None:
        with self.factory.begin() as db:
            ensure_keys(db, ("RS256", "ES256"))
        self.keyring.refresh()

    def add_deliveries(
        self,
        uris: list[str],
        *,
        alg: str = "RS256",
        sid: str | None = "sid-1",
        subject: str | None = "alice",
        **row: Any,
    ) -> list[int]:
        """One client + one pending back-channel delivery per URI; returns the delivery ids."""
        self._n += 1
        term_id = f"t{self._n}-{uuid.uuid4().hex[:12]}"
        ids = []
        with self.factory.begin() as db:
            db.add(
                Termination(
                    id=term_id, target_kind="sid", target_value=sid or "x", reason="test", initiator="test"
                )
            )
            for i, uri in enumerate(uris):
                cid = f"c{self._n}-{i}-{uuid.uuid4().hex[:8]}"
                db.add(Client(client_id=cid, id_token_signed_response_alg=alg, backchannel_logout_uri=uri))
                db.flush()
                d = Delivery(
                    termination_id=term_id,
                    channel=BACKCHANNEL,
                    client_id=cid,
                    sid=sid,
                    subject=subject,
                    target_uri=uri,
                    **row,
                )
                db.add(d)
                db.flush()
                ids.append(d.id)
        return ids

    def get(self, delivery_id: int) -> Delivery:
        with self.factory() as db:
            d = db.get(Delivery, delivery_id)
            assert d is not None
            d.attempt_log  # noqa: B018  (load before the session closes)
            return d

    def clear(self) -> None:
        with self.factory.begin() as db:
            db.execute(delete(DeliveryAttempt))
            db.execute(delete(Delivery))
            db.execute(delete(Termination))
            db.execute(delete(Client))


@pytest.fixture
def sqlite_db(tmp_path: Any) -> Iterator[DB]:
    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    upgrade(engine)
    db = DB(engine)
    db.ensure_keys()
    yield db
    engine.dispose()


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True):
            return None
    except Exception as exc:
        return f"PostgreSQL at 127.0.0.1:5432 unreachable: {type(exc).__name__}"


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    """A dedicated PostgreSQL database for this test session (other engineers' tests also
    use database ``test``), created and dropped here."""
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    import psycopg

    name = f"oidc_delivery_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", pool_size=20, max_overflow=20
    )
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_db(pg_engine: Engine) -> Iterator[DB]:
    db = DB(pg_engine)
    db.ensure_keys()
    db.clear()
    yield db
    db.clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outbox_db(request: pytest.FixtureRequest) -> DB:
    """The test once on a SQLite outbox and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")


def write_rows(s: Session, uris: list[str], *, one_client: bool = False) -> list[int]:
    """What a termination writes: one pending back-channel row per URI (one OP session each)
    for one client per URI or, ``one_client``, one client for all (that client's
    termination), in the caller's transaction ``s``; returns the delivery ids."""
    cids = [f"c-{uuid.uuid4().hex[:10]}" for _ in ([uris[0]] if one_client else uris)]
    kind, value = ("client", cids[0]) if one_client else ("sid", "x")
    term_id = f"t-{uuid.uuid4().hex[:12]}"
    s.add(Termination(id=term_id, target_kind=kind, target_value=value, reason="test", initiator="test"))
    for cid, uri in zip(cids, uris, strict=False):
        s.add(Client(client_id=cid, backchannel_logout_uri=uri))
    s.flush()
    rows = [
        Delivery(
            termination_id=term_id,
            channel=BACKCHANNEL,
            client_id=cids[0] if one_client else cids[n],
            sid=f"sid-{n}",
            subject="alice",
            target_uri=uri,
        )
        for n, uri in enumerate(uris)
    ]
    s.add_all(rows)
    s.flush()
    return [d.id for d in rows]


# --------------------------------------------------------------------------- dispatchers


@pytest.fixture
def dispatchers() -> Iterator[list[Dispatcher]]:
    """The test's dispatchers (it appends them), stopped afterwards."""
    made: list[Dispatcher] = []
    yield made
    for d in made:
        d.stop(timeout=10)


@pytest.fixture
def settings() -> Settings:
    return fast_settings()


__all__ = ["DB", "ISSUER", "RPServer", "Received", "Reply", "SigningKey", "fast_settings", "write_rows"]
