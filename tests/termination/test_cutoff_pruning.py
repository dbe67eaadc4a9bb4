"""Pruning cut-offs (issue 17): a termination's cut-off is deleted only once nothing it refuses
could be presented valid without it, and deleting it changes no answer at any endpoint.
Driven over real HTTP against a live OP (the fixtures of test_cutoff.py), with the chunks run
to completion first, then ``prune_cutoffs`` (retention 0), then every old token, code and
cookie presented again."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from oidc_logout.chunks import run_pending
from oidc_logout.cutoffs import prune_cutoffs, still_needed
from oidc_logout.storage.models import AuthorizationCode, Cutoff, Grant
from oidc_logout.termination import by_client, by_credential, by_sid, by_subject, terminate
from tests.support.idp import Browser, authorize, introspect, pkce_pair, refresh

from .conftest import Env, make_env
from .test_cutoff import _code, _exchange_status, _session, _terminate_chunked, _userinfo


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    e = make_env(database_url, termination_chunk_budget=0)  # chunks only when the test runs them
    yield e
    e.idp.stop()
    e.rps.stop()


def _sid_of(env: Env, tokens: dict[str, Any]) -> str:
    return str(introspect(env.idp.url, env.metas["rp-a"], tokens["access_token"])["sid"])


def _cutoffs(env: Env) -> dict[str, str]:
    """{termination id: kind:value} of the cut-offs left."""
    with env.idp.provider.session_factory() as db:
        return {c.termination_id: f"{c.kind}:{c.value}" for c in db.scalars(select(Cutoff))}


def _answers(
    env: Env, held: list[tuple[str, str, dict[str, Any]]], browsers: list[Browser]
) -> dict[str, Any]:
    """What every endpoint says about every token, without changing anything: userinfo and
    introspection of each access and refresh token, and whether each browser's cookie still
    gets a code at /authorize."""
    out: dict[str, Any] = {}
    for label, client, tokens in held:
        meta = env.metas[client]
        out[f"{label} userinfo"] = _userinfo(env, tokens["access_token"])
        out[f"{label} AT"] = introspect(env.idp.url, meta, tokens["access_token"]).get("active")
        out[f"{label} RT"] = introspect(env.idp.url, meta, tokens["refresh_token"]).get("active")
    for i, browser in enumerate(browsers):
        page = browser.http.get(
            f"{env.idp.url}/authorize",
            params={
                "response_type": "code",
                "client_id": "rp-a",
                "redirect_uri": env.metas["rp-a"]["redirect_uris"][0],
                "scope": "openid",
                "state": "s",
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": pkce_pair()[1],
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
            timeout=10,
        )
        out[f"browser {i} gets a code"] = "code=" in page.headers.get("Location", "")
    return out


def _retention_0(env: Env) -> Any:
    return env.idp.settings.replace(termination_cutoff_retention=0)


def test_pruning_deletes_only_unneeded_cutoffs_and_changes_no_answer_at_any_endpoint(env: Env) -> None:
    """Four terminations, chunks complete, then pruning: every cut-off goes. The hard one is
    the include_offline subject cut-off: an offline grant of a session that a plain logout
    ended after the cut-off committed (so neither that logout nor the sessions' chunk revoked
    it) is revoked by the subject's grant walk, so nothing needs the cut-off any more. Every
    old access and refresh token, code and cookie gets the same answer before and after, at
    userinfo, introspection, the refresh grant, the token endpoint and /authorize."""
    b_alice1, alice1 = _session(env, names=("rp-a", "rp-b", "rp-c"))
    code, verifier = _code(b_alice1, env.metas["rp-a"])
    b_alice2 = Browser(env.idp.url)
    b_alice2.login("alice")
    alice_offline = authorize(b_alice2, env.metas["rp-a"], scope="openid offline_access")
    b_bob = Browser(env.idp.url)
    b_bob.login("bob")
    bob_offline = authorize(b_bob, env.metas["rp-a"], scope="openid offline_access")
    _b, bob2 = _session(env, user="bob", names=("rp-b",))
    bob_sid = _sid_of(env, bob_offline)

    _terminate_chunked(env, by_subject("alice"))
    _terminate_chunked(env, by_subject("bob"), include_offline=True)
    # A plain logout of one of bob's sessions commits after his cut-off, before any chunk: it
    # ends the session but (Back-Channel Logout §2.7) not its offline grant.
    with env.idp.provider.session_factory.begin() as db:
        terminate(db, by_sid(bob_sid), reason="user logout", initiator="test")
    _terminate_chunked(env, by_client("rp-c"))
    with env.idp.provider.session_factory() as db:
        version = db.scalar(select(Grant.credential_version).where(Grant.client_id == "rp-b").limit(1))
    _terminate_chunked(env, by_credential("rp-b", version + 1))
    b_fresh, fresh = _session(env, names=("rp-a",))  # alice signs in again after the cut-off
    assert run_pending(env.idp.provider.session_factory) > 0
    assert len(_cutoffs(env)) == 4

    held = [
        ("alice1 rp-a", "rp-a", alice1["rp-a"]),
        ("alice1 rp-b", "rp-b", alice1["rp-b"]),
        ("alice1 rp-c", "rp-c", alice1["rp-c"]),
        ("alice offline rp-a", "rp-a", alice_offline),
        ("bob offline rp-a", "rp-a", bob_offline),
        ("bob2 rp-b", "rp-b", bob2["rp-b"]),
        ("fresh rp-a", "rp-a", fresh["rp-a"]),
    ]
    browsers = [b_alice1, b_alice2, b_bob, b_fresh]
    before = _answers(env, held, browsers)
    # The cases that make the test mean something: dead through the cut-off alone, and live.
    assert before["bob offline rp-a RT"] is False
    assert before["alice offline rp-a RT"] is True  # §2.7: include_offline=False spares it
    assert before["fresh rp-a AT"] is True and before["alice1 rp-a AT"] is False
    assert before["browser 3 gets a code"] is True and before["browser 0 gets a code"] is False

    result = prune_cutoffs(env.idp.provider.session_factory, _retention_0(env))

    after = _answers(env, held, browsers)
    assert after == before
    assert result.examined == 4 and result.pruned == 4
    assert list(_cutoffs(env)) == []
    with env.idp.provider.session_factory() as db:  # the grant walk, not the cut-off, killed it
        assert db.scalar(select(Grant.revoked_at).where(Grant.sid == bob_sid)) is not None
    # The refresh grant and the code exchange (they would change state on success): every
    # refresh token that was dead is still refused, the old code too.
    for label, client, tokens in held:
        if not before[f"{label} RT"]:
            resp = refresh(env.idp.url, env.metas[client], tokens["refresh_token"])
            assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant", label
    resp = _exchange_status(env, env.metas["rp-a"], code, verifier)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    # The spared offline refresh token still works (pruning killed nothing either).
    assert refresh(env.idp.url, env.metas["rp-a"], alice_offline["refresh_token"]).status_code == 200
    # A second run finds nothing more to do: the remaining cut-off is still needed.
    assert prune_cutoffs(env.idp.provider.session_factory, _retention_0(env)).pruned == 0


def test_client_cutoff_is_kept_while_a_code_it_refuses_is_unexpired(env: Env) -> None:
    """Codes are not marked by the chunks: the client kill's cut-off is what refuses a code
    issued before it, so it is kept while that code is unexpired, and pruned once it has
    expired (its ``expires_at`` moved to the past here, instead of waiting out
    ``authorization_code_lifetime``); the code stays refused."""
    browser, _t = _session(env, names=("rp-a",))
    code, verifier = _code(browser, env.metas["rp-a"])
    _terminate_chunked(env, by_client("rp-a"))
    run_pending(env.idp.provider.session_factory)
    factory = env.idp.provider.session_factory

    assert prune_cutoffs(factory, _retention_0(env)).pruned == 0
    with factory() as db:
        (cutoff,) = db.scalars(select(Cutoff))
        assert still_needed(db, cutoff) == "a code it covers is unused and unexpired"
    with factory.begin() as db:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        db.execute(
            update(AuthorizationCode).where(AuthorizationCode.used_at.is_(None)).values(expires_at=past)
        )
    assert prune_cutoffs(factory, _retention_0(env)).pruned == 1
    resp = _exchange_status(env, env.metas["rp-a"], code, verifier)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def test_cutoffs_are_kept_for_the_retention_period_and_while_chunks_run(env: Env) -> None:
    """Nothing is pruned while the termination is running (its chunks read the cut-off), nor
    within ``termination_cutoff_retention`` of its completion (default: a day)."""
    _session(env)
    term = _terminate_chunked(env, by_subject("alice"))
    factory = env.idp.provider.session_factory
    assert prune_cutoffs(factory, _retention_0(env)).examined == 0  # running
    run_pending(factory)
    assert env.idp.settings.termination_cutoff_retention == 24 * 3600
    assert prune_cutoffs(factory, env.idp.settings).examined == 0  # completed just now
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1, seconds=1)
    assert prune_cutoffs(factory, env.idp.settings, now=later).pruned == 1
    assert term.id not in _cutoffs(env)


def test_concurrent_pruners_delete_each_cutoff_once_without_errors(env: Env, database_url: str) -> None:
    """Several delivery loops prune at once: every unneeded cut-off goes, none fails."""
    for _ in range(3):
        for user in ("alice", "bob"):
            _session(env, user=user, names=("rp-a",))
            _terminate_chunked(env, by_subject(user))
    factory = env.idp.provider.session_factory
    run_pending(factory)
    settings = _retention_0(env)
    results: list[int] = []
    errors: list[BaseException] = []

    def prune() -> None:
        try:
            results.append(prune_cutoffs(factory, settings, limit=2).pruned)
            results.append(prune_cutoffs(factory, settings, limit=100).pruned)
        except BaseException as exc:  # pragma: no cover - the assertion shows it
            errors.append(exc)

    threads = [threading.Thread(target=prune) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert _cutoffs(env) == {}
    if database_url.startswith("postgresql"):
        assert sum(results) == 6  # FOR UPDATE SKIP LOCKED: each examined by one pruner
    else:
        assert sum(results) >= 6  # SQLite: two pruners may delete a row twice (harmless)


def test_the_delivery_loop_prunes_cutoffs_in_its_housekeeping(database_url: str) -> None:
    """The embedded dispatcher (and so every ``oidc-logout worker``) prunes on its own."""
    env = make_env(database_url, termination_cutoff_retention=0)
    try:
        dispatcher = env.idp.provider.dispatcher
        assert dispatcher is not None
        dispatcher.housekeeping_interval = 0.2
        _session(env, names=("rp-a",))
        with env.idp.provider.session_factory.begin() as db:
            terminate(db, by_subject("alice"), reason="incident", initiator="test", inline_limit=0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _cutoffs(env):
            time.sleep(0.1)
        assert _cutoffs(env) == {}
    finally:
        env.idp.stop()
        env.rps.stop()
