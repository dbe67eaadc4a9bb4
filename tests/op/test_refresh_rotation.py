"""Refresh token rotation and reuse detection (RFC 9700 §4.14.2) against a live OP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from oidc_logout.storage.models import Grant, Token
from oidc_logout.tokens import token_hash
from tests.support.idp import (
    Browser,
    IdP,
    authorize,
    client_meta,
    introspect,
    refresh,
    start_idp,
)

RP = client_meta("rot-a")
OTHER = client_meta("rot-b", secret="other-secret-" + "y" * 20)


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    """One OP per module and database; every test uses its own login (session and grant)."""
    server = start_idp(module_database_url, clients=[RP, OTHER])
    yield server
    server.stop()


def _tokens(idp: IdP, meta: dict = RP) -> dict:
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    return authorize(browser, meta, scope="openid offline_access")


def _active(idp: IdP, token: str) -> bool:
    return introspect(idp.url, RP, token)["active"]


def test_used_refresh_token_is_replaced(idp):
    """RFC 9700 §4.14.2: each refresh issues a new refresh token and invalidates the one presented."""
    first = _tokens(idp)
    resp = refresh(idp.url, RP, first["refresh_token"])
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert not _active(idp, first["refresh_token"])
    assert _active(idp, second["refresh_token"]) and _active(idp, second["access_token"])
    # The old access token stays valid until it expires (rotation retires refresh tokens only).
    assert _active(idp, first["access_token"])
    third = refresh(idp.url, RP, second["refresh_token"])
    assert third.status_code == 200, third.text


def test_rotated_tokens_stay_in_the_same_grant(idp):
    """RFC 9700 §4.14.2: rotated refresh tokens belong to one grant (the unit a reuse revokes)."""
    first = _tokens(idp)
    second = refresh(idp.url, RP, first["refresh_token"]).json()
    with idp.provider.session_factory() as db:
        grants = {
            db.scalar(select(Token.grant_id).where(Token.token_hash == token_hash(t)))
            for t in (first["refresh_token"], second["refresh_token"], second["access_token"])
        }
    assert len(grants) == 1


def test_reusing_a_rotated_refresh_token_revokes_the_whole_grant(idp):
    """RFC 9700 §4.14.2: presenting a rotated refresh token again revokes the grant's active tokens."""
    first = _tokens(idp)
    second = refresh(idp.url, RP, first["refresh_token"]).json()
    reuse = refresh(idp.url, RP, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    for token in (first["access_token"], second["access_token"], second["refresh_token"]):
        assert not _active(idp, token)
    # The legitimate holder's current refresh token no longer works either.
    late = refresh(idp.url, RP, second["refresh_token"])
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
    with idp.provider.session_factory() as db:
        grant_id = db.scalar(
            select(Token.grant_id).where(Token.token_hash == token_hash(second["refresh_token"]))
        )
        assert db.get(Grant, grant_id).revoked_at is not None


def test_reuse_does_not_touch_other_grants(idp):
    """RFC 9700 §4.14.2: reuse revokes only the compromised grant, not the user's other grants."""
    victim = _tokens(idp)
    bystander = _tokens(idp)
    refresh(idp.url, RP, victim["refresh_token"])
    assert refresh(idp.url, RP, victim["refresh_token"]).status_code == 400
    assert _active(idp, bystander["refresh_token"]) and _active(idp, bystander["access_token"])


def test_refresh_by_another_client_fails_and_changes_nothing(idp):
    """RFC 6749 §6: the refresh token is bound to the client it was issued to."""
    tokens = _tokens(idp)
    resp = refresh(idp.url, OTHER, tokens["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert _active(idp, tokens["refresh_token"])
    assert refresh(idp.url, RP, tokens["refresh_token"]).status_code == 200


def test_access_token_cannot_be_used_as_refresh_token(idp):
    """RFC 6749 §6: only a refresh token is accepted by the refresh_token grant."""
    tokens = _tokens(idp)
    resp = refresh(idp.url, RP, tokens["access_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert _active(idp, tokens["refresh_token"]) and _active(idp, tokens["access_token"])


def test_a_rotated_token_presented_by_another_client_revokes_nothing(idp):
    """RFC 6749 §6: a refresh token is checked against the authenticated client before
    anything else; another client presenting a stale one proves nothing about the holder and
    must not be able to revoke the holder's grant (a denial of service otherwise)."""
    first = _tokens(idp)
    second = refresh(idp.url, RP, first["refresh_token"]).json()
    resp = refresh(idp.url, OTHER, first["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert _active(idp, second["refresh_token"]) and _active(idp, second["access_token"])
