"""The example IdP after adopting oidc-logout in extension mode: its own server, models,
login and consent, with OP sessions, sid, single logout and termination of its own tokens."""

from __future__ import annotations

import secrets
import time
from typing import Any

import requests
from authlib.integrations.sqla_oauth2 import create_save_token_func
from sqlalchemy import func, select

from examples.authlib_idp.models import OAuth2Token, User, db
from oidc_logout.op import by_subject, terminate
from oidc_logout.storage.models import HostTokenSession, OPSession, SessionParticipant, Termination
from oidc_logout.testing import CaptureServer

from .conftest import (
    PASSWORD,
    WEBAPP,
    Browser,
    alice_sub,
    forms,
    introspect,
    logout_client,
    signed_in,
    start_example,
    token_request,
    userinfo_status,
    verify_id_token,
)


def test_id_token_carries_the_op_session_sid_and_the_host_login_amr(adopted: Any) -> None:
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    claims = verify_id_token(idp.url, tokens["id_token"])
    assert claims["amr"] == ["pwd"]
    with idp.app.app_context():
        session_row = db.session.get(OPSession, claims["sid"])
        assert session_row is not None and session_row.subject == claims["sub"]
        took_part = db.session.scalar(
            select(SessionParticipant.client_id).where(SessionParticipant.sid == claims["sid"])
        )
        assert took_part == "portal"
    body = introspect(idp, portal, tokens["access_token"])
    assert body["active"] is True and body["sid"] == claims["sid"] and body["sub"] == claims["sub"]


def test_discovery_and_jwks_are_merged_into_the_hosts(adopted: Any) -> None:
    idp, _portal = adopted
    doc = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert doc["authorization_endpoint"] == f"{idp.url}/oauth/authorize"  # the host's, unchanged
    assert doc["end_session_endpoint"] == f"{idp.url}/oidc/end_session"
    assert doc["introspection_endpoint"] == f"{idp.url}/oidc/introspect"
    assert doc["revocation_endpoint"] == f"{idp.url}/oauth/revoke"  # the host's own RFC 7009
    assert doc["backchannel_logout_supported"] is True and doc["frontchannel_logout_supported"] is True
    keys = requests.get(doc["jwks_uri"], timeout=10).json()["keys"]
    with idp.app.app_context():
        ours = {k["kid"] for k in idp.app.extensions["oidc_logout"].provider.keyring.public_jwks()["keys"]}
    assert ours <= {k["kid"] for k in keys}


def test_rp_initiated_logout_notifies_the_rp_and_revokes_the_hosts_tokens(
    adopted: Any, rp: CaptureServer
) -> None:
    idp, portal = adopted
    browser, tokens = signed_in(idp, portal)
    sid = verify_id_token(idp.url, tokens["id_token"])["sid"]
    assert userinfo_status(idp, tokens["access_token"]) == 200

    r = browser.http.get(
        f"{idp.url}/oidc/end_session",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": portal["post_logout_redirect_uris"][0],
        },
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302 and r.headers["Location"].startswith(portal["post_logout_redirect_uris"][0])
    assert rp.wait_for(1, 10, path="/portal/backchannel")
    (delivery,) = rp.hits("/portal/backchannel")
    assert delivery.sid == sid
    # Back-Channel Logout §2.7: the host's access and refresh tokens stop working.
    assert userinfo_status(idp, tokens["access_token"]) == 401
    assert introspect(idp, portal, tokens["access_token"]) == {"active": False}
    refreshed = token_request(
        idp.url, portal, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 400
    # The host's own login state follows the OP session: prompt=none now needs a login.
    again = browser.authorize(portal, prompt="none")
    assert "error=login_required" in again.headers["Location"]


def test_refresh_rotation_keeps_the_session_binding(adopted: Any) -> None:
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    sid = verify_id_token(idp.url, tokens["id_token"])["sid"]
    rotated = token_request(
        idp.url, portal, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert introspect(idp, portal, new["access_token"])["sid"] == sid
    idp.app.extensions["oidc_logout"].provider.terminate_now(
        by_subject(alice_sub(idp)), reason="test", initiator="test", wait=0
    )
    assert userinfo_status(idp, new["access_token"]) == 401


def test_introspection_agrees_with_the_hosts_validator_when_only_the_refresh_column_is_set(
    adopted: Any,
) -> None:
    """A host whose revoke_old_credential retires only the refresh token: Authlib's bearer
    validator (the mixin's is_revoked(): either column) refuses the row's access token, and
    RFC 7662 introspection says the same, not "active"."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    assert introspect(idp, portal, tokens["access_token"])["active"] is True
    with idp.app.app_context():
        row = db.session.scalar(select(OAuth2Token).where(OAuth2Token.access_token == tokens["access_token"]))
        assert row is not None
        row.refresh_token_revoked_at = 1
        db.session.commit()
    assert userinfo_status(idp, tokens["access_token"]) == 401
    assert introspect(idp, portal, tokens["access_token"]) == {"active": False}
    assert introspect(idp, portal, tokens["refresh_token"]) == {"active": False}


def _set_lifetime(idp: Any, access_token: str, *, issued_ago: int, expires_in: int) -> None:
    with idp.app.app_context():
        row = db.session.scalar(select(OAuth2Token).where(OAuth2Token.access_token == access_token))
        assert row is not None
        row.issued_at = int(time.time()) - issued_ago
        row.expires_in = expires_in
        db.session.commit()


def test_introspection_agrees_with_the_hosts_validator_on_expiry(adopted: Any) -> None:
    """Authlib's bearer validator asks the mixin's is_expired(): a row without expires_in (0)
    never expires, one past issued_at + expires_in has. RFC 7662 introspection says the same:
    active without "exp" for the first, inactive for the second."""
    idp, portal = adopted
    _browser, forever = signed_in(idp, portal)
    _browser, expired = signed_in(idp, portal)
    _set_lifetime(idp, forever["access_token"], issued_ago=7200, expires_in=0)
    _set_lifetime(idp, expired["access_token"], issued_ago=7200, expires_in=3600)
    assert userinfo_status(idp, forever["access_token"]) == 200
    body = introspect(idp, portal, forever["access_token"])
    assert body["active"] is True and "exp" not in body, body
    assert userinfo_status(idp, expired["access_token"]) == 401
    assert introspect(idp, portal, expired["access_token"]) == {"active": False}


def test_a_token_issued_before_adoption_is_revoked_by_a_subject_termination(adopted: Any) -> None:
    """The row the before-app wrote (Authlib's create_save_token_func: no session, no side
    table row) is found by its user_id and revoked; the host's own resource protection and
    the introspection endpoint refuse it."""
    idp, _portal = adopted
    access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with idp.app.test_request_context():
        from authlib.oauth2.rfc6749 import OAuth2Request

        user = db.session.scalar(select(User).where(User.username == "alice"))
        request = OAuth2Request("POST", "https://idp.example/oauth/token")
        request.user = user
        request.client = type("C", (), {"client_id": WEBAPP["client_id"]})()
        before_app_save = create_save_token_func(db.session, OAuth2Token)
        before_app_save(
            {
                "token_type": "Bearer",
                "access_token": access,
                "refresh_token": refresh,
                "scope": "openid profile",
                "expires_in": 3600,
            },
            request,
        )
        assert db.session.scalar(select(func.count()).select_from(HostTokenSession)) == 0
    assert userinfo_status(idp, access) == 200
    assert introspect(idp, WEBAPP, access)["active"] is True

    outcome = idp.app.extensions["oidc_logout"].provider.terminate_now(
        by_subject(alice_sub(idp)), reason="account disabled", initiator="test", wait=0
    )
    assert userinfo_status(idp, access) == 401
    assert introspect(idp, WEBAPP, access) == {"active": False}
    assert introspect(idp, WEBAPP, refresh) == {"active": False}
    with idp.app.app_context():
        term = db.session.get(Termination, outcome.termination_id)
        assert term is not None and term.tokens_revoked == 1


def test_termination_in_the_hosts_transaction_rolls_back_on_both_sides(adopted: Any) -> None:
    """terminate() runs in the host's own db.session: rolled back, neither the host's token
    row nor the extension's session, termination or outbox rows changed; committed, both did."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    sub = alice_sub(idp)

    def state() -> tuple[Any, Any, int]:
        with idp.app.app_context():
            row = db.session.scalar(
                select(OAuth2Token).where(OAuth2Token.access_token == tokens["access_token"])
            )
            ended = db.session.scalar(
                select(func.count()).select_from(OPSession).where(OPSession.ended_at.is_not(None))
            )
            terms = db.session.scalar(select(func.count()).select_from(Termination))
            return row.access_token_revoked_at, ended, terms or 0

    before = state()
    assert before == (0, 0, 0)
    with idp.app.app_context():
        term = terminate(db.session, by_subject(sub), reason="disabled", initiator="hr")
        assert term.sessions_ended == 1 and term.tokens_revoked >= 1
        db.session.rollback()  # e.g. the host's own change in the same transaction failed
    assert state() == before
    with idp.app.app_context():
        terminate(db.session, by_subject(sub), reason="disabled", initiator="hr")
        db.session.commit()
    revoked_at, ended, terms = state()
    assert revoked_at > 0 and ended == 1 and terms == 1


def test_extension_routes_live_under_the_prefix_and_host_404s_stay_the_hosts(adopted: Any) -> None:
    idp, _portal = adopted
    confirm = requests.get(f"{idp.url}/oidc/end_session", timeout=10)
    assert confirm.status_code == 200 and forms(confirm.text)  # the logout confirmation page
    for path in ("/end_session", "/authorize", "/token"):  # nothing of ours outside /oidc
        assert requests.get(f"{idp.url}{path}", timeout=10).status_code == 404
    host_404 = requests.get(f"{idp.url}/no-such-page", timeout=10)
    assert host_404.status_code == 404 and host_404.headers["Content-Type"].startswith("text/html")
    ours_404 = requests.get(f"{idp.url}/oidc/no-such-endpoint", timeout=10)
    assert ours_404.status_code == 404 and ours_404.json()["error"]


def test_the_hosts_registration_accepts_and_checks_the_logout_metadata(
    database_url: str, rp: CaptureServer
) -> None:
    idp = start_example(database_url)
    try:
        meta = logout_client(rp, "dynamic")
        del meta["client_id"], meta["client_secret"]
        from .conftest import REGISTRATION_TOKEN

        headers = {"Authorization": f"Bearer {REGISTRATION_TOKEN}"}
        r = requests.post(f"{idp.url}/oauth/register", json=meta, headers=headers, timeout=10)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["backchannel_logout_uri"] == meta["backchannel_logout_uri"]
        assert body["post_logout_redirect_uris"] == meta["post_logout_redirect_uris"]
        bad = dict(meta, backchannel_logout_uri=meta["backchannel_logout_uri"] + "#fragment")
        r = requests.post(f"{idp.url}/oauth/register", json=bad, headers=headers, timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_client_metadata"
    finally:
        idp.stop()


def test_signing_in_again_as_the_same_user_keeps_the_session(adopted: Any) -> None:
    idp, _portal = adopted
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    assert browser.login(password=PASSWORD).status_code == 303
    with idp.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OPSession)) == 1


def test_bad_introspection_requests_get_oauth_errors(adopted: Any) -> None:
    """RFC 7662 §2.1/§2.2 on the host's server: no client authentication is invalid_client,
    no token is invalid_request, an unknown token or another client's is only inactive."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    url = f"{idp.url}/oidc/introspect"
    anonymous = requests.post(url, data={"token": tokens["access_token"]}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    no_token = requests.post(url, data={}, auth=(portal["client_id"], portal["client_secret"]), timeout=10)
    assert no_token.status_code == 400 and no_token.json()["error"] == "invalid_request"
    assert introspect(idp, portal, "not-a-token-" + "x" * 20) == {"active": False}
    assert introspect(idp, WEBAPP, tokens["access_token"]) == {"active": False}  # portal's token
    assert introspect(idp, portal, tokens["refresh_token"])["token_type"] == "refresh_token"
