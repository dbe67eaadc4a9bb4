"""Issue 12 item 1: self-registered clients are untrusted (Core 1.0 §3.1.2.4 consent,
§3.1.2.1 prompt, §11 offline_access; RFC 7591 §3 registration gate; RFC 9700 §4.11). The
attack: any site registers a public client with its own redirect_uri and silently gets a
signed-in user's code (identity, offline refresh token, an id_token_hint for end_session)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from oidc_logout.storage.models import AuthorizationCode, Client, Consent
from tests.support.idp import Browser, IdP, client_meta, exchange_code, pkce_pair, start_idp

FIRST_PARTY = client_meta("first-party", port=9)
ATTACKER_CB = "http://127.0.0.1:7/steal"


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    server = start_idp(
        module_database_url, clients=[FIRST_PARTY], registration_open=True, registration_rate_limit=0
    )
    yield server
    server.stop()


def _register(idp: IdP, **extra: Any) -> dict[str, Any]:
    resp = requests.post(
        f"{idp.url}/register",
        json={
            "redirect_uris": [ATTACKER_CB],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "Evil",
            **extra,
        },
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def _signed_in(idp: IdP) -> Browser:
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    return browser


def _authorize(
    browser: Browser, client: dict[str, Any], scope: str = "openid", **extra: str
) -> tuple[requests.Response, str]:
    verifier, challenge = pkce_pair()
    resp = browser.http.get(
        f"{browser.idp_url}/authorize",
        params={
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "scope": scope,
            "state": "st-1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        },
        allow_redirects=False,
        timeout=10,
    )
    return resp, verifier


def _codes(idp: IdP, client_id: str) -> int:
    with idp.provider.session_factory() as db:
        return db.scalar(
            select(func.count())
            .select_from(AuthorizationCode)
            .where(AuthorizationCode.client_id == client_id)
        )


def _consent_form(page: requests.Response) -> list[tuple[str, str]]:
    """The hidden fields of the consent page's form, as a browser would post them."""
    assert page.status_code == 200 and "Allow access?" in page.text, page.text[:300]
    return [
        (m.group(1), m.group(2).replace("&amp;", "&"))
        for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
    ]


def _decide(
    browser: Browser, page: requests.Response, answer: str, csrf: str | None = None
) -> requests.Response:
    fields = [(k, v) for k, v in _consent_form(page) if csrf is None or k != "csrf_token"]
    if csrf is not None:
        fields.append(("csrf_token", csrf))
    fields.append(("consent", answer))
    return browser.http.post(f"{browser.idp_url}/authorize", data=fields, allow_redirects=False, timeout=10)


def _query(resp: requests.Response) -> dict[str, list[str]]:
    return parse_qs(urlsplit(resp.headers["Location"]).query)


# -- registration gate ---------------------------------------------------------------------
def test_dynamic_registration_is_closed_by_default(sqlite_url: str) -> None:
    """RFC 7591 §3: without an initial access token configured and without registration_open,
    POST /register answers 403 access_denied and creates no client."""
    idp = start_idp(sqlite_url)
    try:
        resp = requests.post(f"{idp.url}/register", json={"redirect_uris": [ATTACKER_CB]}, timeout=10)
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"] == "access_denied" and resp.json()["error_description"]
        with idp.provider.session_factory() as db:
            assert db.scalar(select(func.count()).select_from(Client)) == 0
    finally:
        idp.stop()


def test_registration_is_rate_limited_per_address(sqlite_url: str) -> None:
    """Registration rate limit (registration_rate_limit per window and address): beyond it,
    429 with an OAuth-style body and Retry-After, and no client is created."""
    idp = start_idp(sqlite_url, registration_open=True, registration_rate_limit=2)
    try:
        for _ in range(2):
            assert (
                requests.post(
                    f"{idp.url}/register", json={"redirect_uris": [ATTACKER_CB]}, timeout=10
                ).status_code
                == 201
            )
        resp = requests.post(f"{idp.url}/register", json={"redirect_uris": [ATTACKER_CB]}, timeout=10)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"] == "too_many_requests" and resp.json()["error_description"]
        assert int(resp.headers["Retry-After"]) > 0
        with idp.provider.session_factory() as db:
            assert db.scalar(select(func.count()).select_from(Client)) == 2
    finally:
        idp.stop()


def test_registered_clients_are_untrusted_and_operator_clients_trusted(idp: IdP) -> None:
    """Clients loaded by the operator are first-party; RFC 7591 registrations never are."""
    evil = _register(idp)
    with idp.provider.session_factory() as db:
        assert db.get(Client, FIRST_PARTY["client_id"]).trusted is True
        assert db.get(Client, evil["client_id"]).trusted is False


# -- the attack ------------------------------------------------------------------------------
def test_self_registered_client_gets_a_consent_page_not_a_code(idp: IdP) -> None:
    """Core 1.0 §3.1.2.4: a signed-in user's code goes to an untrusted client only after the
    user approved it; until then the OP shows a page and never redirects (RFC 9700 §4.11)."""
    evil = _register(idp)  # default registered scope includes offline_access
    browser = _signed_in(idp)
    resp, _ = _authorize(browser, evil, scope="openid profile offline_access")
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert "Allow access?" in resp.text and "offline_access" in resp.text
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert _codes(idp, evil["client_id"]) == 0


def test_operator_loaded_client_needs_no_consent(idp: IdP) -> None:
    """Trusted (first-party) clients get the code at once, offline_access included."""
    browser = _signed_in(idp)
    resp, _ = _authorize(browser, FIRST_PARTY, scope="openid offline_access")
    assert resp.status_code == 302 and "code" in _query(resp)


def test_approval_issues_the_code_and_is_remembered_per_client_and_scope(idp: IdP) -> None:
    """Core 1.0 §3.1.2.4: approved once, the same (client, scopes) need no page again; a new
    scope asks again. The consent is stored server-side."""
    evil = _register(idp)
    browser = _signed_in(idp)
    page, verifier = _authorize(browser, evil, scope="openid profile")
    resp = _decide(browser, page, "allow")
    assert resp.status_code == 302 and resp.headers["Location"].startswith(ATTACKER_CB)
    assert _query(resp)["state"] == ["st-1"]
    tokens = exchange_code(idp.url, evil, _query(resp)["code"][0], verifier)
    assert tokens["id_token"]
    with idp.provider.session_factory() as db:
        row = db.scalars(select(Consent).where(Consent.client_id == evil["client_id"])).one()
        assert row.subject == "alice" and row.scope.split() == ["openid", "profile"]
    again, _ = _authorize(browser, evil, scope="openid")
    assert again.status_code == 302 and "code" in _query(again)
    more, _ = _authorize(browser, evil, scope="openid email")
    assert more.status_code == 200 and "Allow access?" in more.text


def test_offline_access_only_with_consent(idp: IdP) -> None:
    """Core 1.0 §11: offline_access for an untrusted client needs the user's consent, also
    after other scopes were approved."""
    evil = _register(idp)
    browser = _signed_in(idp)
    page, _ = _authorize(browser, evil, scope="openid")
    assert _decide(browser, page, "allow").status_code == 302
    offline, _ = _authorize(browser, evil, scope="openid offline_access")
    assert offline.status_code == 200 and "offline_access" in offline.text
    silent, _ = _authorize(browser, evil, scope="openid offline_access", prompt="none")
    assert silent.status_code == 302 and _query(silent)["error"] == ["consent_required"]


def test_prompt_none_without_consent_answers_consent_required(idp: IdP) -> None:
    """Core 1.0 §3.1.2.1 prompt=none: no page; consent_required to the redirect_uri, with state."""
    evil = _register(idp)
    browser = _signed_in(idp)
    resp, _ = _authorize(browser, evil, prompt="none")
    assert resp.status_code == 302 and resp.headers["Location"].startswith(ATTACKER_CB)
    q = _query(resp)
    assert q["error"] == ["consent_required"] and q["state"] == ["st-1"] and "code" not in q
    assert _codes(idp, evil["client_id"]) == 0


def test_prompt_consent_always_shows_the_page(idp: IdP) -> None:
    """Core 1.0 §3.1.2.1 prompt=consent: the page, even for a trusted client or a remembered
    consent."""
    browser = _signed_in(idp)
    resp, _ = _authorize(browser, FIRST_PARTY, prompt="consent")
    assert resp.status_code == 200 and "Allow access?" in resp.text
    approved = _decide(browser, resp, "allow")
    assert approved.status_code == 302 and "code" in _query(approved)
    evil = _register(idp)
    page, _ = _authorize(browser, evil)
    assert _decide(browser, page, "allow").status_code == 302
    again, _ = _authorize(browser, evil, prompt="consent")
    assert again.status_code == 200 and "Allow access?" in again.text


def test_deny_redirects_access_denied(idp: IdP) -> None:
    """RFC 6749 §4.1.2.1: the resource owner denied the request: access_denied, no code."""
    evil = _register(idp)
    browser = _signed_in(idp)
    page, _ = _authorize(browser, evil)
    resp = _decide(browser, page, "deny")
    assert resp.status_code == 302 and _query(resp)["error"] == ["access_denied"]
    assert _codes(idp, evil["client_id"]) == 0


@pytest.mark.parametrize("csrf", ["", "forged", "é", "\u2028x"])
def test_consent_without_this_browsers_csrf_token_is_no_consent(idp: IdP, csrf: str) -> None:
    """OWASP CSRF: an approval posted without the page's token (or a non-ASCII one: no 500 from
    compare_digest) issues no code and stores no consent."""
    evil = _register(idp)
    browser = _signed_in(idp)
    page, _ = _authorize(browser, evil)
    resp = _decide(browser, page, "allow", csrf=csrf)
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "Allow access?" in resp.text
    assert _codes(idp, evil["client_id"]) == 0
    with idp.provider.session_factory() as db:
        assert (
            db.scalar(select(func.count()).select_from(Consent).where(Consent.client_id == evil["client_id"]))
            == 0
        )


def test_cross_site_approval_without_the_op_session_issues_nothing(idp: IdP) -> None:
    """A forged POST from another site carries no OP session (SameSite=Lax): login, no code."""
    evil = _register(idp)
    resp = requests.post(
        f"{idp.url}/authorize",
        data={
            "response_type": "code",
            "client_id": evil["client_id"],
            "redirect_uri": ATTACKER_CB,
            "scope": "openid",
            "code_challenge": "a" * 43,
            "code_challenge_method": "S256",
            "consent": "allow",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    assert _codes(idp, evil["client_id"]) == 0


# -- invalid_scope (issue 12 item 9) ---------------------------------------------------------
def test_unregistered_scope_is_invalid_scope_at_the_authorization_endpoint(idp: IdP) -> None:
    """RFC 6749 §4.1.2.1: a scope the client is not registered for is invalid_scope (redirected
    with state), not silently dropped."""
    browser = _signed_in(idp)
    resp, _ = _authorize(browser, FIRST_PARTY, scope="openid phone")
    assert resp.status_code == 302
    q = _query(resp)
    assert q["error"] == ["invalid_scope"] and q["state"] == ["st-1"] and "code" not in q


def test_unregistered_scope_is_invalid_scope_at_the_token_endpoint(sqlite_url: str) -> None:
    """RFC 6749 §5.2 invalid_scope at the token endpoint (client_credentials)."""
    svc = {
        "client_id": "svc",
        "client_secret": "svc-secret-" + "x" * 20,
        "scope": "profile",
        "grant_types": ["client_credentials"],
        "response_types": [],
    }
    idp = start_idp(sqlite_url, clients=[svc])
    try:
        auth = ("svc", svc["client_secret"])
        bad = requests.post(
            f"{idp.url}/token",
            data={"grant_type": "client_credentials", "scope": "profile email"},
            auth=auth,
            timeout=10,
        )
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_scope", bad.text
        ok = requests.post(
            f"{idp.url}/token",
            data={"grant_type": "client_credentials", "scope": "profile"},
            auth=auth,
            timeout=10,
        )
        assert ok.status_code == 200 and ok.json()["scope"] == "profile"
    finally:
        idp.stop()
