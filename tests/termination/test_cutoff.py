"""Cut-off at commit: a termination by subject, client or credential kills its whole scope the
moment it commits, before any chunk of its per-row work has run, at every endpoint that takes
a token, a code or the session cookie (issue 17). Driven over real HTTP against a live OP
whose delivery loop runs no chunks (termination_chunk_budget=0), so nothing but the cut-off
row can be what refuses them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from oidc_logout.chunks import run_pending
from oidc_logout.storage.models import Cutoff, Delivery, Grant, OPSession, Termination, Token
from oidc_logout.termination import RUNNING, by_client, by_credential, by_subject, terminate
from tests.support.idp import Browser, authorize, introspect, pkce_pair, refresh, revoke

from .conftest import Env, admin_token, make_env


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    e = make_env(database_url, termination_chunk_budget=0)
    yield e
    e.idp.stop()
    e.rps.stop()


def _session(
    env: Env, user: str = "alice", names: tuple[str, ...] = ("rp-a", "rp-b")
) -> tuple[Browser, dict]:
    browser = Browser(env.idp.url)
    browser.login(user)
    return browser, {n: authorize(browser, env.metas[n]) for n in names}


def _code(browser: Browser, meta: dict[str, Any]) -> tuple[str, str]:
    """An authorization code (and its PKCE verifier), not exchanged yet."""
    verifier, challenge = pkce_pair()
    resp = browser.http.get(
        f"{browser.idp_url}/authorize",
        params={
            "response_type": "code",
            "client_id": meta["client_id"],
            "redirect_uri": meta["redirect_uris"][0],
            "scope": "openid",
            "state": "s",
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302, resp.text
    return parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0], verifier


def _exchange_status(env: Env, meta: dict[str, Any], code: str, verifier: str) -> requests.Response:
    return requests.post(
        f"{env.idp.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": meta["redirect_uris"][0],
        },
        auth=(meta["client_id"], meta["client_secret"]),
        timeout=10,
    )


def _userinfo(env: Env, access_token: str) -> int:
    return requests.get(
        f"{env.idp.url}/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=10
    ).status_code


def _terminate_chunked(env: Env, target: Any, **kw: Any) -> Termination:
    """Commit a termination that leaves all its per-row work to chunks (inline_limit=0)."""
    with env.idp.provider.session_factory.begin() as db:
        term = terminate(db, target, reason="incident", initiator="test", inline_limit=0, **kw)
        db.expunge(term)
    return term


def _counts(env: Env) -> dict[str, int]:
    with env.idp.provider.session_factory() as db:
        return {
            "ended": db.scalar(
                select(func.count()).select_from(OPSession).where(OPSession.ended_at.is_not(None))
            ),
            "revoked": db.scalar(
                select(func.count()).select_from(Token).where(Token.revoked_at.is_not(None))
            ),
            "grants_revoked": db.scalar(
                select(func.count()).select_from(Grant).where(Grant.revoked_at.is_not(None))
            ),
            "deliveries": db.scalar(select(func.count()).select_from(Delivery)),
        }


def _assert_dead(env: Env, meta: dict[str, Any], tokens: dict[str, Any]) -> None:
    assert _userinfo(env, tokens["access_token"]) == 401
    assert introspect(env.idp.url, meta, tokens["access_token"]) == {"active": False}
    assert introspect(env.idp.url, meta, tokens["refresh_token"]) == {"active": False}
    resp = refresh(env.idp.url, meta, tokens["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def _assert_live(env: Env, meta: dict[str, Any], tokens: dict[str, Any]) -> None:
    assert _userinfo(env, tokens["access_token"]) == 200
    assert introspect(env.idp.url, meta, tokens["access_token"])["active"] is True


def test_subject_tokens_codes_and_cookies_are_refused_at_commit_before_any_chunk(env):
    """Subject: at commit (no session ended, no token marked, no outbox row yet) the subject's
    access and refresh tokens fail at userinfo, introspection and the refresh grant, a code issued
    before fails at the token endpoint, revocation still answers 200, the browser's cookie no longer
    signs in; another subject and the subject's sessions after the cut-off stay live."""
    browser1, t1 = _session(env)
    _, t2 = _session(env)
    _, tb = _session(env, user="bob")
    code, verifier = _code(browser1, env.metas["rp-a"])
    before = _counts(env)

    term = _terminate_chunked(env, by_subject("alice"))

    assert term.state == RUNNING and term.sessions_ended == 0
    assert _counts(env) == before  # no per-row work has run: only the cut-off is committed
    for t in (t1, t2):
        for name in ("rp-a", "rp-b"):
            _assert_dead(env, env.metas[name], t[name])
    resp = _exchange_status(env, env.metas["rp-a"], code, verifier)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    # RFC 7009 §2.2: an invalid token is no error; the token stays dead.
    assert revoke(env.idp.url, env.metas["rp-b"], t2["rp-b"]["access_token"]).status_code == 200
    assert revoke(env.idp.url, env.metas["rp-b"], t2["rp-b"]["refresh_token"]).status_code == 200
    assert introspect(env.idp.url, env.metas["rp-b"], t2["rp-b"]["access_token"]) == {"active": False}
    # The browser's OP session is dead: /authorize asks it to sign in again instead of issuing a code.
    page = browser1.http.get(
        f"{env.idp.url}/authorize",
        params={
            "response_type": "code",
            "client_id": "rp-a",
            "redirect_uri": env.metas["rp-a"]["redirect_uris"][0],
            "scope": "openid",
            "state": "s",
            "nonce": "n",
            "code_challenge": pkce_pair()[1],
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert "code=" not in page.headers.get("Location", "")
    for name in ("rp-a", "rp-b"):
        _assert_live(env, env.metas[name], tb[name])
    _, fresh = _session(env)  # alice signs in after the cut-off: her new session works
    _assert_live(env, env.metas["rp-a"], fresh["rp-a"])


def test_client_kill_switch_refuses_the_clients_tokens_and_codes_at_commit(env):
    """Client: the killed client's tokens (session-bound and client_credentials) and a code it
    was issued before the cut-off are refused at commit; another client in the same session lives."""
    browser, t = _session(env)
    code, verifier = _code(browser, env.metas["rp-a"])
    cc = admin_token(env)
    before = _counts(env)

    term = _terminate_chunked(env, by_client("rp-a"))
    term_admin = _terminate_chunked(env, by_client("admin"))

    assert term.state == RUNNING and term_admin.state == RUNNING
    assert _counts(env) == before
    _assert_dead(env, env.metas["rp-a"], t["rp-a"])
    resp = _exchange_status(env, env.metas["rp-a"], code, verifier)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    _assert_live(env, env.metas["rp-b"], t["rp-b"])
    r = requests.post(
        f"{env.idp.url}/admin/terminations",
        json={"sub": "bob", "reason": "x"},
        headers={"Authorization": f"Bearer {cc}"},
        timeout=5,
    )
    assert r.status_code == 401
    # After the cut-off, the client signs the End-User in again and its new tokens work.
    fresh = authorize(browser, env.metas["rp-a"])
    _assert_live(env, env.metas["rp-a"], fresh)


def test_credential_cutoff_refuses_grants_of_the_older_secret_at_commit(env):
    """Credential: grants authenticated with a secret version below the cut-off die at commit."""
    _, t = _session(env, names=("rp-a",))
    before = _counts(env)
    with env.idp.provider.session_factory() as db:
        version = db.scalar(select(Grant.credential_version).where(Grant.client_id == "rp-a").limit(1))
    _terminate_chunked(env, by_credential("rp-a", version + 1), include_offline=True)
    assert _counts(env) == before
    _assert_dead(env, env.metas["rp-a"], t["rp-a"])


def test_chunks_after_the_cutoff_finish_the_per_row_work_and_the_report_says_so(env):
    """The chunks then end the sessions, revoke the tokens and write the outbox once; the
    termination report shows running, then complete with the counts."""
    _session(env)
    _session(env)
    term = _terminate_chunked(env, by_subject("alice"))
    provider = env.idp.provider
    with provider.session_factory() as db:
        report = provider.termination_report(db, term.id)
    assert report is not None and report["progress"]["state"] == "running"
    assert report["progress"]["chunks_done"] == 0
    # Two sessions, their walk's empty page, then the subject's grants walk (nothing left:
    # the sessions' chunks revoked their grants).
    assert run_pending(provider.session_factory, size=1) == 4
    with provider.session_factory() as db:
        report = provider.termination_report(db, term.id)
        cutoffs = db.scalar(select(func.count()).select_from(Cutoff).where(Cutoff.termination_id == term.id))
    assert report is not None
    assert report["progress"]["state"] == "complete" and report["progress"]["chunks_done"] == 4
    assert report["sessions_ended"] == 2 and report["tokens_revoked"] == 8
    assert report["progress"]["deliveries_written"] == 4 == report["deliveries_total"]
    assert cutoffs == 1
    assert run_pending(provider.session_factory, size=1) == 0  # nothing left, nothing redone
