"""RFC 7009 token revocation against a live OP on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select, update

from oidc_logout.storage.models import Termination, Token
from oidc_logout.tokens import token_hash
from oidc_logout.vocabulary import TargetKind
from tests.support.idp import (
    Browser,
    IdP,
    authorize,
    client_meta,
    introspect,
    refresh,
    revoke,
    start_idp,
)

from ._race import race_posts, summary

RP_A = client_meta("rev-a")
RP_B = client_meta("rev-b", secret="other-secret-" + "y" * 20)
PUBLIC = client_meta("rev-pub", secret=None)


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    """One OP per module and database; every test uses its own login (session and grant)."""
    server = start_idp(module_database_url, clients=[RP_A, RP_B, PUBLIC])
    yield server
    server.stop()


def _tokens(idp: IdP, meta: dict, scope: str = "openid offline_access") -> dict:
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    return authorize(browser, meta, scope=scope)


def _post(idp: IdP, data: dict, auth: tuple[str, str] | None = None) -> requests.Response:
    return requests.post(f"{idp.url}/revoke", data=data, auth=auth, timeout=10)


def _active(idp: IdP, token: str, meta: dict = RP_A) -> bool:
    return introspect(idp.url, meta, token)["active"]


# -- client authentication (§2.1) ---------------------------------------------------------
def test_client_secret_basic_client_revokes_its_token(idp):
    """RFC 7009 §2.1: the client authenticates as at the token endpoint (HTTP Basic)."""
    tokens = _tokens(idp, RP_A)
    resp = revoke(idp.url, RP_A, tokens["access_token"])
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert not _active(idp, tokens["access_token"])


def test_client_secret_post_client_revokes_its_token(idp):
    """RFC 7009 §2.1 / RFC 6749 §2.3.1: credentials in the request body are accepted."""
    tokens = _tokens(idp, RP_A)
    resp = _post(
        idp,
        {
            "token": tokens["access_token"],
            "client_id": RP_A["client_id"],
            "client_secret": RP_A["client_secret"],
        },
    )
    assert resp.status_code == 200
    assert not _active(idp, tokens["access_token"])


def test_public_client_revokes_with_client_id_only(idp):
    """RFC 7009 §2.1: a public client identifies itself with client_id (auth method none)."""
    tokens = _tokens(idp, PUBLIC, scope="openid")
    resp = _post(idp, {"token": tokens["refresh_token"], "client_id": PUBLIC["client_id"]})
    assert resp.status_code == 200
    # The refresh token's whole grant went with it: the access token is inactive too.
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert (
            requests.post(
                f"{idp.url}/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": token,
                    "client_id": PUBLIC["client_id"],
                },
                timeout=10,
            ).status_code
            == 400
        )


def test_confidential_client_without_secret_is_refused(idp):
    """RFC 7009 §2.1 / RFC 6749 §3.2.1: a confidential client must authenticate."""
    tokens = _tokens(idp, RP_A)
    resp = _post(idp, {"token": tokens["access_token"], "client_id": RP_A["client_id"]})
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert _active(idp, tokens["access_token"])


def test_wrong_secret_is_invalid_client_and_revokes_nothing(idp):
    """RFC 7009 §2.2.1 / RFC 6749 §5.2: failed client authentication is invalid_client."""
    tokens = _tokens(idp, RP_A)
    resp = _post(idp, {"token": tokens["access_token"]}, auth=(RP_A["client_id"], "wrong-secret"))
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert _active(idp, tokens["access_token"])


# -- what is revoked ----------------------------------------------------------------------
def test_wrong_token_type_hint_still_finds_and_revokes_the_token(idp):
    """RFC 7009 §2.1: a hint that does not match extends the search to all token types."""
    tokens = _tokens(idp, RP_A)
    assert revoke(idp.url, RP_A, tokens["access_token"], hint="refresh_token").status_code == 200
    assert not _active(idp, tokens["access_token"])
    assert _active(idp, tokens["refresh_token"])


def test_refresh_token_with_access_token_hint_is_revoked(idp):
    """RFC 7009 §2.1: the hint only orders the search; a refresh token sent as access_token is revoked."""
    tokens = _tokens(idp, RP_A)
    assert revoke(idp.url, RP_A, tokens["refresh_token"], hint="access_token").status_code == 200
    assert not _active(idp, tokens["refresh_token"])


def test_unrecognised_hint_is_ignored_and_the_token_revoked(idp):
    """RFC 7009 §2.1: an unknown token_type_hint is only a hint; every type is searched."""
    tokens = _tokens(idp, RP_A)
    resp = revoke(idp.url, RP_A, tokens["access_token"], hint="foo")
    assert resp.status_code == 200
    assert not _active(idp, tokens["access_token"])


@pytest.mark.parametrize("token", ["never-issued-" + "z" * 30, "x"])
def test_unknown_token_gives_200(idp, token):
    """RFC 7009 §2.2: "invalid tokens do not cause an error response" (200)."""
    resp = revoke(idp.url, RP_A, token)
    assert resp.status_code == 200


def test_expired_token_gives_200(idp):
    """RFC 7009 §2.2: an expired (invalid) token is answered with 200."""
    tokens = _tokens(idp, RP_A)
    with idp.provider.session_factory.begin() as db:
        db.execute(
            update(Token)
            .where(Token.token_hash == token_hash(tokens["access_token"]))
            .values(expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        )
    assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200
    assert not _active(idp, tokens["access_token"])


def test_repeating_a_revocation_is_harmless(idp):
    """RFC 7009 §2.2: revoking an already revoked token again gives 200 both times."""
    tokens = _tokens(idp, RP_A)
    assert revoke(idp.url, RP_A, tokens["refresh_token"]).status_code == 200
    assert revoke(idp.url, RP_A, tokens["refresh_token"]).status_code == 200
    assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200
    assert not _active(idp, tokens["refresh_token"])


def test_token_of_another_client_is_not_revoked(idp):
    """RFC 7009 §2.1: the server verifies the token was issued to the caller (invalid_grant, RFC 6749 §5.2)."""
    tokens = _tokens(idp, RP_A)
    for kind in ("access_token", "refresh_token"):
        resp = revoke(idp.url, RP_B, tokens[kind])
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_grant"
        assert _active(idp, tokens[kind])


def test_public_client_cannot_revoke_another_clients_token(idp):
    """RFC 7009 §2.1: identifying as a public client gives no power over other clients' tokens."""
    tokens = _tokens(idp, RP_A)
    resp = _post(idp, {"token": tokens["refresh_token"], "client_id": PUBLIC["client_id"]})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"
    assert _active(idp, tokens["refresh_token"])


def test_id_token_gives_unsupported_token_type(idp):
    """RFC 7009 §2.2.1: a token type the server cannot revoke is unsupported_token_type (HTTP 400)."""
    tokens = _tokens(idp, RP_A)
    resp = revoke(idp.url, RP_A, tokens["id_token"])
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "unsupported_token_type"
    assert body["error_description"]
    assert _active(idp, tokens["access_token"])


def test_revoking_refresh_token_revokes_its_access_tokens(idp):
    """RFC 7009 §2.1: revoking a refresh token SHOULD invalidate the access tokens of its grant."""
    tokens = _tokens(idp, RP_A)
    rotated = refresh(idp.url, RP_A, tokens["refresh_token"]).json()  # a second access token
    assert revoke(idp.url, RP_A, rotated["refresh_token"], hint="refresh_token").status_code == 200
    for token in (tokens["access_token"], rotated["access_token"], rotated["refresh_token"]):
        assert introspect(idp.url, RP_A, token) == {"active": False}
    resp = refresh(idp.url, RP_A, rotated["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    userinfo = requests.get(
        f"{idp.url}/userinfo", timeout=10, headers={"Authorization": f"Bearer {rotated['access_token']}"}
    )
    assert userinfo.status_code == 401


def test_revoking_access_token_leaves_its_refresh_token(idp):
    """RFC 7009 §2.1: revoking an access token MAY revoke the refresh token; this OP keeps it."""
    tokens = _tokens(idp, RP_A)
    assert revoke(idp.url, RP_A, tokens["access_token"], hint="access_token").status_code == 200
    assert not _active(idp, tokens["access_token"])
    assert _active(idp, tokens["refresh_token"])
    resp = refresh(idp.url, RP_A, tokens["refresh_token"])
    assert resp.status_code == 200, resp.text
    assert _active(idp, resp.json()["access_token"])


def test_missing_token_parameter_is_invalid_request(idp):
    """RFC 7009 §2.1: token is REQUIRED; without it the request is invalid_request."""
    resp = _post(idp, {"token_type_hint": "access_token"}, auth=(RP_A["client_id"], RP_A["client_secret"]))
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


# -- concurrency ------------------------------------------------------------------------------
def test_concurrent_revocations_of_one_refresh_token_record_one_grant_termination(idp):
    """Eight revocations of one refresh token released together: all answer 200, the grant's
    tokens are dead, and its grant is terminated once (the losers' conditional UPDATEs find
    nothing left and terminate() gives back the winner's record)."""
    tokens = _tokens(idp, RP_A)
    with idp.provider.session_factory() as db:
        grant_id = db.scalar(
            select(Token.grant_id).where(Token.token_hash == token_hash(tokens["refresh_token"]))
        )
    responses = race_posts(
        f"{idp.url}/revoke",
        {"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        8,
        auth=(RP_A["client_id"], RP_A["client_secret"]),
    )
    assert [r.status_code for r in responses] == [200] * 8, summary(responses)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert not _active(idp, token)
    with idp.provider.session_factory() as db:
        terms = db.scalars(
            select(Termination).where(
                Termination.target_kind == TargetKind.GRANT, Termination.target_value == grant_id
            )
        ).all()
    assert len(terms) == 1 and terms[0].tokens_revoked == 2
