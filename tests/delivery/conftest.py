"""Fixtures for delivery tests: real loopback RP receivers, SQLite and PostgreSQL outboxes.

RP receivers are real HTTP servers on 127.0.0.1 (port 0) driven by a per-path script of
replies (200/204/400/500-then-200/429+Retry-After/hang/redirect/huge body). Databases are
real: a SQLite file per test, and one dedicated PostgreSQL *database* per test session
(created from the shared ``test`` database and dropped afterwards).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from oidc_logout.config import Settings
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

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
ISSUER = "https://op.example.test"


# --------------------------------------------------------------------------- RP receivers


@dataclass
class Reply:
    """One scripted answer of an RP receiver."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds before answering
    hang: bool = False  # never answer (until the server stops)
    stream_bytes: int = 0  # send this many extra body bytes (a huge response)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    at: float


class RPServer:
    """A real HTTP server on 127.0.0.1 acting as any number of RP logout endpoints."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.bytes_sent: dict[str, int] = {}
        #: Requests being answered right now, and the most ever at once (all paths / per path).
        self.active: dict[str, int] = {}
        self.max_active = 0
        self.max_active_by_path: dict[str, int] = {}
        #: Set whenever a request arrives (tests wait on it instead of sleeping).
        self.arrived = threading.Condition(self.lock)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                with server.lock:
                    server.received.append(Received(
                        self.path, dict(self.headers.items()), parse_qs(raw), time.monotonic()))
                    script = server.scripts.get(self.path) or [Reply()]
                    reply = script.pop(0) if len(script) > 1 else script[0]
                    server.active[self.path] = server.active.get(self.path, 0) + 1
                    server.max_active = max(server.max_active, sum(server.active.values()))
                    server.max_active_by_path[self.path] = max(
                        server.max_active_by_path.get(self.path, 0), server.active[self.path])
                    server.arrived.notify_all()
                try:
                    self._answer(reply)
                finally:
                    with server.lock:
                        server.active[self.path] -= 1

            def _answer(self, reply: Reply) -> None:
                if reply.hang:
                    server.stopping.wait(30)
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                total = len(reply.body) + reply.stream_bytes
                self.send_header("Content-Length", str(total))
                self.end_headers()
                try:
                    self.wfile.write(reply.body)
                    sent = len(reply.body)
                    chunk = b"x" * 65536
                    while sent < total and not server.stopping.is_set():
                        n = min(len(chunk), total - sent)
                        self.wfile.write(chunk[:n])
                        sent += n
                except OSError:
                    pass
                finally:
                    with server.lock:
                        server.bytes_sent[self.path] = server.bytes_sent.get(self.path, 0) + sent

            do_GET = do_POST

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # 50 simultaneous connects must not hit the backlog

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str, *replies: Reply) -> str:
        """Script ``path`` with ``replies`` (the last one repeats) and return its URL."""
        if not path.startswith("/"):
            path = "/" + path
        with self.lock:
            self.scripts[path] = list(replies) or [Reply()]
        return self.base + path

    def wait_hits(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` requests arrived (any path); False after ``timeout``."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.received) >= n, timeout)

    def hits(self, path: str) -> list[Received]:
        if not path.startswith("/"):
            path = "/" + path
        with self.lock:
            return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rp() -> Iterator[RPServer]:
    server = RPServer()
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
        # Every test RP listens on 127.0.0.1: a per-host bound would make "50 RPs" one host.
        # The bound itself is tested with its own settings (test_target_bounds.py).
        delivery_max_concurrent_per_host=64,
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

    def add_deliveries(self, uris: list[str], *, alg: str = "RS256", sid: str | None = "sid-1",
                       subject: str | None = "alice", **row: Any) -> list[int]:
        """One client + one pending back-channel delivery per URI; returns the delivery ids."""
        self._n += 1
        term_id = f"t{self._n}-{uuid.uuid4().hex[:12]}"
        ids = []
        with self.factory.begin() as db:
            db.add(Termination(id=term_id, target_kind="sid", target_value=sid or "x",
                               reason="test", initiator="test"))
            for i, uri in enumerate(uris):
                cid = f"c{self._n}-{i}-{uuid.uuid4().hex[:8]}"
                db.add(Client(client_id=cid, id_token_signed_response_alg=alg,
                              backchannel_logout_uri=uri))
                db.flush()
                d = Delivery(termination_id=term_id, channel=BACKCHANNEL, client_id=cid,
                             sid=sid, subject=subject, target_uri=uri, **row)
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
    except Exception as exc:  # noqa: BLE001
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
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
                         pool_size=20, max_overflow=20)
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


@pytest.fixture
def settings() -> Settings:
    return fast_settings()


__all__ = ["DB", "ISSUER", "RPServer", "Received", "Reply", "SigningKey", "fast_settings"]
