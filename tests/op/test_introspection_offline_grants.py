"""Introspection says what the token endpoint does (RFC 7662 §2.2) for refresh tokens whose
session has ended: offline_access grants survive a logout unless the termination asks
otherwise (Back-Channel Logout §2.7). Live OP on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oidc_logout.termination import by_sid, by_subject
from tests.support.idp import Browser, IdP, authorize, client_meta, introspect, refresh, start_idp

RP = client_meta("offline-int")
RS = client_meta(
    "offline-rs",
    secret="rs-secret-" + "r" * 20,
    grant_types=["client_credentials"],
    response_types=[],
    redirect_uris=[],
    post_logout_redirect_uris=[],
    scope="oidc_logout:introspect",
)


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    server = start_idp(module_database_url, clients=[RP, RS])
    yield server
    server.stop()


def _login(idp: IdP, scope: str) -> tuple[str, dict]:
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    tokens = authorize(browser, RP, scope=scope)
    sid = introspect(idp.url, RP, tokens["access_token"])["sid"]
    return sid, tokens


def _introspection_matches_token_endpoint(idp: IdP, refresh_token: str) -> tuple[bool, int]:
    """(active as introspected by the client and by a resource server, refresh status)."""
    own = introspect(idp.url, RP, refresh_token, hint="refresh_token")
    by_rs = introspect(idp.url, RS, refresh_token)
    assert own["active"] is by_rs["active"]
    status = refresh(idp.url, RP, refresh_token).status_code
    assert status in (200, 400)
    return own["active"], status


@pytest.mark.parametrize("kind", ["sid", "subject"])
def test_offline_refresh_token_is_active_after_logout_and_refreshes(idp: IdP, kind: str) -> None:
    """Back-Channel §2.7 / RFC 7662 §2.2: an offline_access refresh token kept by a logout
    introspects active (without the ended session's sid) and the token endpoint honours it."""
    sid, tokens = _login(idp, "openid offline_access")
    target = by_sid(sid) if kind == "sid" else by_subject("alice")
    idp.provider.terminate_now(target, reason="user logout", initiator="test", wait=0)
    info = introspect(idp.url, RP, tokens["refresh_token"])
    assert info["active"] is True and info["token_type"] == "refresh_token", info
    assert info["sub"] == "alice" and "sid" not in info
    assert introspect(idp.url, RP, tokens["access_token"]) == {"active": False}
    assert _introspection_matches_token_endpoint(idp, tokens["refresh_token"]) == (True, 200)


def test_offline_refresh_token_revoked_when_the_termination_asks(idp: IdP) -> None:
    """Back-Channel §2.7 (include_offline): inactive at introspection, refused at /token."""
    sid, tokens = _login(idp, "openid offline_access")
    idp.provider.terminate_now(
        by_sid(sid), reason="offboarding", initiator="test", include_offline=True, wait=0
    )
    assert _introspection_matches_token_endpoint(idp, tokens["refresh_token"]) == (False, 400)


def test_online_refresh_token_dies_with_its_session(idp: IdP) -> None:
    """Back-Channel §2.7: without offline_access both endpoints refuse the refresh token."""
    sid, tokens = _login(idp, "openid")
    idp.provider.terminate_now(by_sid(sid), reason="user logout", initiator="test", wait=0)
    assert _introspection_matches_token_endpoint(idp, tokens["refresh_token"]) == (False, 400)


def test_refreshed_offline_tokens_are_session_less_and_active(idp: IdP) -> None:
    """RFC 7662 §2.2: tokens refreshed from a kept offline grant introspect active, no sid."""
    sid, tokens = _login(idp, "openid offline_access")
    idp.provider.terminate_now(by_sid(sid), reason="user logout", initiator="test", wait=0)
    new = refresh(idp.url, RP, tokens["refresh_token"]).json()
    for token in (new["access_token"], new["refresh_token"]):
        info = introspect(idp.url, RP, token)
        assert info["active"] is True and "sid" not in info
    assert _introspection_matches_token_endpoint(idp, new["refresh_token"]) == (True, 200)
