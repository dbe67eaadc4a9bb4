"""The Flask push endpoint over real HTTP beside RPLogout: a CAEP session-revoked SET pushed by
the loopback transmitter (RFC 8935) ends the RP's server-side session, in the same session index
and store back-channel logout uses — memory, SQLite, PostgreSQL and Redis backends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from oidc_logout.rp import JWKSCache, MemoryReplayCache, MemorySessionIndex, MemorySessionStore, SETValidator
from oidc_logout.rp.flask_ssf import SSFPush

from ..conftest import ServerThread, unique_table_prefix
from ..rp_app import create_app
from .conftest import AUDIENCE, Transmitter, make_set

PUSH_AUTH = "Bearer push-secret-for-tests"

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Replay store, session index and session store of one kind (real time)."""
    kind = request.param
    if kind == "memory":
        yield {"replay": MemoryReplayCache(), "index": MemorySessionIndex(), "store": MemorySessionStore()}
    elif kind in ("sqlite", "postgres"):
        from oidc_logout.rp.sqla import RPTables, SQLAReplayCache, SQLASessionIndex, SQLASessionStore

        engine = request.getfixturevalue("sqlite_engine" if kind == "sqlite" else "pg_engine")
        tables = RPTables(unique_table_prefix())
        tables.create_all(engine)
        try:
            yield {
                "replay": SQLAReplayCache(engine, tables),
                "index": SQLASessionIndex(engine, tables),
                "store": SQLASessionStore(engine, tables),
            }
        finally:
            tables.drop_all(engine)
    else:
        from oidc_logout.rp.redis import RedisReplayCache, RedisSessionIndex, RedisSessionStore

        client = request.getfixturevalue("redis_client")
        prefix = request.getfixturevalue("redis_prefix")
        yield {
            "replay": RedisReplayCache(client, prefix=prefix),
            "index": RedisSessionIndex(client, prefix=prefix),
            "store": RedisSessionStore(client, prefix=prefix),
        }


class RP:
    """The test RP (tests/rp/rp_app.py) with an SSF push endpoint, served on loopback."""

    def __init__(self, transmitter: Transmitter, backends: dict[str, Any]) -> None:
        self.transmitter = transmitter
        self.store = backends["store"]
        self.index = backends["index"]
        self.app, self.rp = create_app(
            transmitter.issuer, replay=backends["replay"], index=self.index, store=self.store
        )
        validator = SETValidator(
            issuer=transmitter.issuer,
            audience=AUDIENCE,
            keys=JWKSCache(f"{transmitter.issuer}/jwks"),
            replay_cache=backends["replay"],  # the back-channel logout replay store
        )
        self.ssf = SSFPush(self.app, validator=validator, push_authorization=PUSH_AUTH)
        self.server = ServerThread(self.app)
        self.url = self.server.url
        self.stream = {
            "delivery": {
                "method": "urn:ietf:rfc:8935",
                "endpoint_url": f"{self.url}/ssf/events",
                "authorization_header": PUSH_AUTH,
            }
        }

    def browser(self, sub: str, sid: str) -> tuple[requests.Session, str]:
        b = requests.Session()
        assert b.get(f"{self.url}/callback", params={"sub": sub, "sid": sid}, timeout=5).status_code == 200
        assert self.logged_in(b)
        return b, b.cookies["session"]

    def logged_in(self, browser: requests.Session) -> bool:
        return browser.get(f"{self.url}/protected", allow_redirects=False, timeout=5).status_code == 200

    def push(self, token: str, authorization: str | None = PUSH_AUTH) -> requests.Response:
        stream: dict[str, Any] = {"delivery": dict(self.stream["delivery"])}
        if authorization is None:
            del stream["delivery"]["authorization_header"]
        else:
            stream["delivery"]["authorization_header"] = authorization
        return self.transmitter.push(stream, token)


@pytest.fixture
def rp(transmitter: Transmitter, backends: dict[str, Any]) -> Iterator[RP]:
    server = RP(transmitter, backends)
    yield server
    server.server.stop()


def session_revoked(issuer: str, sid: str, sub: str = "alice") -> str:
    sub_id = {
        "format": "complex",
        "session": {"format": "opaque", "id": sid},
        "user": {"format": "iss_sub", "iss": issuer, "sub": sub},
    }
    return make_set(issuer, sub_id=sub_id, now=time.time())


def test_pushed_session_revoked_ends_the_server_side_session(rp: RP, transmitter: Transmitter) -> None:
    """RFC 8935 §2.3 202, and CAEP session-revoked ended the session in the store (not only a
    cookie): the old cookie no longer opens the protected page."""
    alice, alice_local = rp.browser("alice", "op-sid-1")
    bob, bob_local = rp.browser("bob", "op-sid-2")
    resp = rp.push(session_revoked(transmitter.issuer, "op-sid-1"))
    assert resp.status_code == 202 and resp.content == b""
    assert rp.store.load(alice_local) is None
    assert not rp.logged_in(alice)
    assert rp.index.local_sessions_for(transmitter.issuer, sid="op-sid-1") == set()
    assert rp.logged_in(bob) and rp.store.load(bob_local) is not None
    (record,) = SSFPush.receiver_of(rp.app).history
    assert record.outcome == "processed" and record.ended == {alice_local}


def test_user_subject_ends_every_session_of_that_user(rp: RP, transmitter: Transmitter) -> None:
    """A session-revoked SET about a user (iss_sub) ends all of the user's sessions (by sub)."""
    first, _ = rp.browser("alice", "op-sid-1")
    second, _ = rp.browser("alice", "op-sid-5")
    sub_id = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"}
    assert rp.push(make_set(transmitter.issuer, sub_id=sub_id, now=time.time())).status_code == 202
    assert not rp.logged_in(first) and not rp.logged_in(second)


def test_replayed_push_is_acknowledged_and_ends_nothing_new(rp: RP, transmitter: Transmitter) -> None:
    """RFC 8935 §4: a retried SET gets 202 again; it does not end the user's new session."""
    token = make_set(
        transmitter.issuer,
        sub_id={"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"},
        now=time.time(),
    )
    first, _ = rp.browser("alice", "op-sid-1")
    assert rp.push(token).status_code == 202
    assert not rp.logged_in(first)
    again, _ = rp.browser("alice", "op-sid-7")
    assert rp.push(token).status_code == 202
    assert rp.logged_in(again)
    assert [r.outcome for r in SSFPush.receiver_of(rp.app).history] == ["processed", "duplicate"]


def test_invalid_push_is_400_json_and_changes_nothing(rp: RP, transmitter: Transmitter) -> None:
    """RFC 8935 §2.4: 400 with {"err", "description"}; the session stays."""
    alice, _ = rp.browser("alice", "op-sid-1")
    token = make_set(transmitter.issuer, aud="https://someone-else.example", now=time.time())
    resp = rp.push(token)
    assert resp.status_code == 400 and resp.headers["Content-Type"] == "application/json"
    assert resp.json()["err"] == "invalid_audience" and rp.logged_in(alice)


@pytest.mark.parametrize(("authorization", "status"), [(None, 401), ("Bearer wrong", 403)])
def test_push_without_the_stream_authorization_is_refused(
    rp: RP, transmitter: Transmitter, authorization: str | None, status: int
) -> None:
    """SSF 1.0 §6.1.1: the transmitter MUST send the configured authorization_header."""
    alice, _ = rp.browser("alice", "op-sid-1")
    assert rp.push(session_revoked(transmitter.issuer, "op-sid-1"), authorization).status_code == status
    assert rp.logged_in(alice)


def test_push_endpoint_answers_405_to_other_methods(rp: RP) -> None:
    """RFC 8935 §2.1: SETs arrive by POST; a GET changes nothing and is not cached."""
    resp = requests.get(f"{rp.url}/ssf/events", timeout=5)
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_released_jti_can_be_claimed_again(backends: dict[str, Any]) -> None:
    """Every replay store forgets a jti whose processing failed (so the retry is processed)."""
    replay = backends["replay"]
    until = time.time() + 60
    assert replay.add_if_absent("https://op", "secevent:j1", until)
    assert not replay.add_if_absent("https://op", "secevent:j1", until)
    replay.discard("https://op", "secevent:j1")
    assert replay.add_if_absent("https://op", "secevent:j1", until)
