"""A hostile-input target: the demo OP outside development mode on a SQLite file, with
clients, a live OP session, tokens, and a fingerprint of every table to prove that refused
requests changed nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from jwcrypto import jwk
from sqlalchemy import select, text

from oidc_logout.config import Settings
from oidc_logout.demo.idp import create_idp_app
from oidc_logout.storage.base import Base, utcnow
from oidc_logout.storage.models import OPSession, SessionParticipant
from tests.support.servers import LiveServer

ISSUER = "https://op.hostile.test"
SECRET = "hostile-secret-" + "z" * 20
ADMIN_SECRET = "hostile-admin-" + "y" * 20
LIVE_SID = "live-session-1"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@dataclass
class HostileOP:
    app: Any
    server: LiveServer
    public_pem: bytes
    public_jwk_json: bytes
    kid: str
    access_token: str

    @property
    def provider(self) -> Any:
        return self.app.extensions["oidc_logout"].provider

    @property
    def client(self) -> Any:
        return self.app.test_client()

    def fingerprint(self) -> str:
        """A hash of every row of every table (order-independent of insertion)."""
        h = hashlib.sha256()
        with self.provider.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                rows = conn.execute(select(table)).all()
                h.update(table.name.encode())
                for row in sorted(repr(tuple(r)) for r in rows):
                    h.update(row.encode())
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        with self.provider.engine.connect() as conn:
            return {
                t.name: int(conn.execute(text(f'SELECT count(*) FROM "{t.name}"')).scalar())
                for t in Base.metadata.sorted_tables
            }

    def session_alive(self) -> bool:
        with self.provider.session_factory() as db:
            row = db.get(OPSession, LIVE_SID)
            return row is not None and row.ended_at is None


def id_token_claims(op_issuer: str = ISSUER) -> dict[str, Any]:
    now = int(utcnow().timestamp())
    return {
        "iss": op_issuer,
        "aud": "rp-h",
        "sub": "alice",
        "sid": LIVE_SID,
        "iat": now,
        "exp": now + 600,
        "auth_time": now,
    }


@pytest.fixture(scope="module")
def hostile_op(module_database_url: str) -> Iterator[HostileOP]:
    """On SQLite and on PostgreSQL (which refuses NUL in text, unlike SQLite). Registration
    is opened and throttling is off, so hostile input reaches the code behind them (the
    gates and limits have tests of their own)."""
    settings = Settings(
        issuer=ISSUER,
        database_url=module_database_url,
        dev_mode=False,
        expiry_sweep_interval=0,
        embedded_dispatcher=False,
        registration_open=True,
        registration_rate_limit=0,
        login_max_failures_per_account=0,
        login_max_failures_per_address=0,
    )
    clients = [
        {
            "client_id": "rp-h",
            "client_secret": SECRET,
            "redirect_uris": ["https://rp.example.com/cb"],
            "post_logout_redirect_uris": ["https://rp.example.com/bye"],
            "grant_types": ["authorization_code", "refresh_token"],
            "backchannel_logout_uri": "https://rp.example.com/bc",
            "backchannel_logout_session_required": True,
        },
        {
            "client_id": "pub",
            "redirect_uris": ["https://rp.example.com/cb"],
            "token_endpoint_auth_method": "none",
        },
        {
            "client_id": "admin",
            "client_secret": ADMIN_SECRET,
            "grant_types": ["client_credentials"],
            "response_types": [],
            "scope": "oidc_logout:admin",
        },
    ]
    app = create_idp_app(settings, clients=clients, start_background=False)
    provider = app.extensions["oidc_logout"].provider
    now = utcnow()
    with provider.session_factory.begin() as db:
        db.add(OPSession(sid=LIVE_SID, subject="alice", auth_time=now))
        db.flush()
        db.add(SessionParticipant(sid=LIVE_SID, client_id="rp-h"))
    resp = app.test_client().post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "oidc_logout:admin"},
        headers={"Authorization": basic("admin", ADMIN_SECRET)},
    )
    assert resp.status_code == 200, resp.data
    access_token = resp.get_json()["access_token"]
    keys = provider.keyring.public_jwks()["keys"]
    rsa = next(k for k in keys if k["kty"] == "RSA")
    key = jwk.JWK(**rsa)
    server = LiveServer(app).start()
    yield HostileOP(app, server, key.export_to_pem(), json.dumps(rsa).encode(), rsa["kid"], access_token)
    server.stop()
    provider.engine.dispose()
