"""Authorization codes are single-use under concurrency (RFC 6749 §4.1.2, §10.5): real
concurrent /token requests against a live OP on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import event, func, select

from oidc_logout.storage.models import AuthorizationCode, Grant, Token
from oidc_logout.tokens import token_hash
from tests.support.idp import Browser, IdP, client_meta, introspect, pkce_pair, refresh, start_idp

from ._race import race_posts, summary

RP = client_meta("code-once")
TRIALS = 12
CONTENDERS = 3


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    server = start_idp(module_database_url, clients=[RP])
    yield server
    server.stop()


def _code(idp: IdP) -> tuple[str, str]:
    """A fresh login and authorization: (code, PKCE verifier), the code not yet redeemed."""
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    verifier, challenge = pkce_pair()
    resp = browser.http.get(
        f"{idp.url}/authorize",
        params={
            "response_type": "code",
            "client_id": RP["client_id"],
            "redirect_uri": RP["redirect_uris"][0],
            "scope": "openid offline_access",
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


def _form(code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": RP["redirect_uris"][0],
    }


def _auth() -> tuple[str, str]:
    return RP["client_id"], RP["client_secret"]


def _grants_of(idp: IdP, code: str) -> list[Any]:
    """Grants whose tokens came from ``code`` (the code's session and client)."""
    with idp.provider.session_factory() as db:
        row = db.scalar(select(AuthorizationCode).where(AuthorizationCode.code_hash == token_hash(code)))
        assert row is not None
        return list(
            db.execute(
                select(Grant.id, Grant.revoked_at).where(
                    Grant.sid == row.sid, Grant.client_id == RP["client_id"]
                )
            )
        )


def test_concurrent_redemptions_of_one_code_issue_tokens_once(idp: IdP) -> None:
    """RFC 6749 §4.1.2/§10.5: of concurrent /token requests with one code exactly one gets
    tokens; the others are invalid_grant (never a 500), and being a second use, they revoke
    everything issued from the code."""
    failures: list[str] = []
    for trial in range(TRIALS):
        code, verifier = _code(idp)
        responses = race_posts(f"{idp.url}/token", _form(code, verifier), CONTENDERS, auth=_auth())
        seen = summary(responses)
        assert all(s < 500 for s, _ in seen), f"trial {trial}: {seen}"
        ok = [r for r in responses if r.status_code == 200]
        if len(ok) != 1 or sorted(seen)[1:] != [(400, "invalid_grant")] * (CONTENDERS - 1):
            failures.append(f"trial {trial}: {seen}")
            continue
        grants = _grants_of(idp, code)
        if len(grants) != 1:
            failures.append(f"trial {trial}: {len(grants)} grants from one code")
            continue
        # §4.1.2: the second use "SHOULD revoke (when possible) all tokens previously issued
        # based on that authorization code" - the winner's tokens included.
        tokens = ok[0].json()
        if (
            grants[0].revoked_at is None
            or introspect(idp.url, RP, tokens["access_token"])["active"]
            or refresh(idp.url, RP, tokens["refresh_token"]).status_code != 400
        ):
            failures.append(f"trial {trial}: tokens of a reused code still work")
    assert not failures, f"{len(failures)}/{TRIALS} trials: " + "; ".join(failures)


def test_later_reuse_revokes_every_token_of_the_code(idp: IdP) -> None:
    """RFC 6749 §4.1.2: a reuse after a successful exchange is denied and revokes the tokens
    issued from the code, refreshed ones included."""
    code, verifier = _code(idp)
    first = requests.post(f"{idp.url}/token", data=_form(code, verifier), auth=_auth(), timeout=10)
    assert first.status_code == 200, first.text
    tokens = first.json()
    rotated = refresh(idp.url, RP, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    again = requests.post(f"{idp.url}/token", data=_form(code, verifier), auth=_auth(), timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    for token in (tokens["access_token"], rotated.json()["access_token"], rotated.json()["refresh_token"]):
        assert introspect(idp.url, RP, token) == {"active": False}
    with idp.provider.session_factory() as db:
        live = db.scalar(
            select(func.count())
            .select_from(Token)
            .join(Grant)
            .where(Grant.id.in_([g.id for g in _grants_of(idp, code)]), Token.revoked_at.is_(None))
        )
    assert live == 0


def test_failed_redemption_does_not_consume_the_code(idp: IdP) -> None:
    """RFC 7636 §4.6: a wrong code_verifier is invalid_grant and changes nothing; the client
    holding the right verifier still redeems the code once."""
    code, verifier = _code(idp)
    bad = requests.post(f"{idp.url}/token", data=_form(code, "x" * 43), auth=_auth(), timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    good = requests.post(f"{idp.url}/token", data=_form(code, verifier), auth=_auth(), timeout=10)
    assert good.status_code == 200, good.text


def test_gave_up_waiting_for_the_sqlite_write_lock_is_a_clean_503(sqlite_url: str) -> None:
    """No 500 when SQLite's busy timeout runs out ("database is locked"): 503
    temporarily_unavailable with Retry-After, nothing changed, and the code still works once."""
    server = start_idp(sqlite_url, clients=[RP])
    try:
        code, verifier = _code(server)

        @event.listens_for(server.provider.engine, "connect")
        def _short_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout=200")

        server.provider.engine.dispose()
        holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
            busy = requests.post(f"{server.url}/token", data=_form(code, verifier), auth=_auth(), timeout=10)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"] == "temporarily_unavailable"
        assert busy.headers["Retry-After"] == "1"
        retry = requests.post(f"{server.url}/token", data=_form(code, verifier), auth=_auth(), timeout=10)
        assert retry.status_code == 200, retry.text
    finally:
        server.stop()
