"""Back-channel logouts survive a signing key rotation (issue 12 item 4).

A real OP (the demo IdP on a loopback port, SQLite and PostgreSQL) and a real RP
(``oidc_logout.rp`` behind Flask on a loopback port) with its JWKS cache:

* ``oidc-logout rotate-key`` publishes the new key first and keeps signing with the old one
  for ``key_rollover_period``, so an RP that fetched the JWKS a moment ago (and rate-limits
  refetches on an unknown ``kid``) still verifies the next logout token;
* a delivery the RP refuses for a key reason (400 ``unknown_kid``, or ``jwks_unavailable``
  when its first JWKS fetch failed) is retried, not recorded as a permanent failure.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask

from oidc_logout import cli
from oidc_logout.rp import (
    DiscoveryClient,
    JWKSCache,
    LogoutTokenValidator,
    MemorySessionIndex,
    MemorySessionStore,
)
from oidc_logout.rp.flask import RPLogout
from oidc_logout.storage.models import Delivery
from oidc_logout.termination import by_sid
from tests.support.idp import Browser, IdP, authorize, client_meta, start_idp
from tests.support.servers import LiveServer

CLIENT = "rp-keys"
FAST = dict(
    delivery_backoff_base=0.05,
    delivery_backoff_cap=0.2,
    delivery_max_attempts=8,
    delivery_key_retry_delay=0.3,
    logout_wait_bound=0.5,
)


def _header(jwt: str) -> dict[str, Any]:
    part = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _claims(jwt: str) -> dict[str, Any]:
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class FlakyJWKS:
    """A loopback JWKS endpoint that answers 503 ``failures`` times, then serves the OP's
    JWKS (fetched from the OP): an RP whose first JWKS fetch fails."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.upstream = ""
        self.server = LiveServer(self._app).start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if self.failures > 0:
            self.failures -= 1
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        body = requests.get(self.upstream, timeout=5).content
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


@dataclass
class Env:
    idp: IdP
    rp_server: LiveServer
    keys: JWKSCache
    index: MemorySessionIndex
    store: MemorySessionStore
    database_url: str
    meta: dict[str, Any]

    def login(self, local_id: str) -> tuple[str, str]:
        """alice signs in at the OP and at the RP; returns (sid, the ID token's kid)."""
        browser = Browser(self.idp.url)
        browser.login()
        id_token = authorize(browser, self.meta)["id_token"]
        sid = _claims(id_token)["sid"]
        self.index.register(self.idp.url, "alice", sid, local_id)
        self.store.save(local_id, {"user": "alice"}, ttl=3600)
        return sid, _header(id_token)["kid"]

    def logout(self, sid: str, timeout: float = 15.0) -> Delivery:
        """End the OP session; wait (bounded) for its delivery to reach a final state."""
        outcome = self.idp.provider.terminate_now(by_sid(sid), reason="test", initiator="test")
        (delivery_id,) = outcome.delivery_ids
        deadline = time.monotonic() + timeout
        while True:
            with self.idp.provider.session_factory() as db:
                d = db.get(Delivery, delivery_id)
                assert d is not None
                d.attempt_log  # noqa: B018
                if d.state in ("delivered", "failed", "dead") or time.monotonic() > deadline:
                    return d
            time.sleep(0.05)


def make_env(
    database_url: str, *, jwks_uri: str | None = None, refetch_interval: float = 30.0, **settings: Any
) -> Env:
    rp_server = LiveServer()
    meta = client_meta(
        CLIENT,
        port=rp_server.port,
        backchannel_logout_uri=f"{rp_server.url}/oidc/backchannel-logout",
        backchannel_logout_session_required=True,
    )
    idp = start_idp(database_url, clients=[meta], **{**FAST, **settings})
    # The RP: discovery (or a fixed jwks_uri), a JWKS cache that refetches on an unknown kid
    # at most once per refetch_interval (what RPs do), server-side sessions.
    if jwks_uri is None:
        keys = JWKSCache(discovery=DiscoveryClient(idp.url), unknown_kid_refetch_interval=refetch_interval)
    else:
        keys = JWKSCache(jwks_uri, unknown_kid_refetch_interval=refetch_interval)
    index, store = MemorySessionIndex(), MemorySessionStore()
    app = Flask("rp-keys")
    RPLogout(
        app,
        validator=LogoutTokenValidator(issuer=idp.url, client_id=CLIENT, keys=keys),
        session_index=index,
        session_store=store,
    )
    rp_server.app = app
    rp_server.start()
    return Env(idp, rp_server, keys, index, store, database_url, meta)


@pytest.fixture
def envs() -> Iterator[list[Env]]:
    made: list[Env] = []
    yield made
    for env in made:
        env.rp_server.stop()
        env.idp.stop()


def rotate(env: Env, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """``oidc-logout rotate-key`` against the OP's database, then make the running OP see
    the rotation at once (the worst case: no key ring cache delay)."""
    capsys.readouterr()
    assert (
        cli.main(["rotate-key", "--json", "--alg", "RS256", "--database-url", env.database_url, *args]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    env.idp.provider.keyring.refresh()
    return out


def test_rotate_key_publishes_first_so_an_rp_with_a_fresh_jwks_still_verifies(
    database_url: str, envs: list[Env], capsys: pytest.CaptureFixture[str]
) -> None:
    """The RP fetched the JWKS just now (verifying the ID token) and will not refetch for
    30 s; right after rotate-key the OP ends the session: the logout token is signed with a
    key the RP knows, the RP session ends."""
    env = make_env(database_url)
    envs.append(env)
    sid, old_kid = env.login("local-1")
    assert env.keys.keys_for(old_kid, "RS256")  # the RP's JWKS fetch, as for the ID token
    fetches = env.keys.fetch_count

    rotated = rotate(env, capsys)
    published = {k["kid"] for k in requests.get(f"{env.idp.url}/jwks", timeout=5).json()["keys"]}
    assert rotated["kid"] in published and old_kid in published  # step 1: published
    assert env.idp.provider.keyring.signing_key("RS256").kid == old_kid  # not signing yet

    d = env.logout(sid)
    assert (d.state, d.attempts) == ("delivered", 1), (d.state, d.last_error)
    assert env.store.load("local-1") is None  # the RP session is gone
    assert env.keys.fetch_count == fetches  # verified from the cached JWKS


def test_a_key_reason_refusal_is_retried_until_the_rp_refetched(
    database_url: str, envs: list[Env], capsys: pytest.CaptureFixture[str]
) -> None:
    """rotate-key --immediately (a compromised key): the RP answers 400 unknown_kid while
    its refetch cooldown lasts; the OP retries and the logout arrives once the RP refetched."""
    # The first attempt must come while the RP's refetch cooldown (counted from its fetch at
    # login) lasts: 1 s was too short for login, rotation and logout under CI load (the RP had
    # refetched already and the first attempt was delivered); retries every 0.3 s outlast it.
    env = make_env(database_url, refetch_interval=4.0, delivery_max_attempts=30)
    envs.append(env)
    sid, old_kid = env.login("local-2")
    assert env.keys.keys_for(old_kid, "RS256")

    rotated = rotate(env, capsys, "--immediately")
    assert env.idp.provider.keyring.signing_key("RS256").kid == rotated["kid"]

    d = env.logout(sid)
    assert d.state == "delivered", (d.state, d.last_error)
    first = d.attempt_log[0]
    assert (first.outcome, first.http_status) == ("retry", 400)
    assert "unknown_kid" in (first.error or "")
    assert env.store.load("local-2") is None


def test_an_rp_whose_first_jwks_fetch_failed_gets_the_logout_on_a_retry(
    database_url: str, envs: list[Env]
) -> None:
    """The RP's JWKS endpoint fails once (jwks_unavailable, answered with 400): retried,
    delivered, the RP session ends."""
    flaky = FlakyJWKS(failures=1)
    try:
        env = make_env(database_url, jwks_uri=flaky.server.url + "/jwks")
        envs.append(env)
        flaky.upstream = env.idp.url + "/jwks"
        sid, _kid = env.login("local-3")

        d = env.logout(sid)
        assert d.state == "delivered", (d.state, d.last_error)
        first = d.attempt_log[0]
        assert (first.outcome, first.http_status) == ("retry", 400)
        assert "jwks_unavailable" in (first.error or "")
        assert env.store.load("local-3") is None
    finally:
        flaky.server.stop()


def test_the_published_key_takes_over_at_the_end_of_the_rollover_period(
    database_url: str, envs: list[Env], capsys: pytest.CaptureFixture[str]
) -> None:
    """Step 2: once the rollover period is over, the new key signs (without a reload of the
    key ring) and the replaced key stays published."""
    env = make_env(database_url)
    envs.append(env)
    # 3 s: the rotate command (its own engine and checks) and this first look fit in it on a loaded CI
    # machine (with 1 s the new key sometimes signed already when looked at).
    rotated = rotate(env, capsys, "--publish-for", "3.0")
    ring = env.idp.provider.keyring
    old_kid = ring.signing_key("RS256").kid
    assert old_kid != rotated["kid"]
    switched = threading.Event()
    deadline = time.monotonic() + 10
    while not switched.is_set() and time.monotonic() < deadline:
        if ring.signing_key("RS256").kid == rotated["kid"]:
            switched.set()
        else:
            switched.wait(0.05)
    assert switched.is_set()
    published = {k["kid"] for k in ring.public_jwks()["keys"]}
    assert {old_kid, rotated["kid"]} <= published
