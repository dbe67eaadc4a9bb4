"""RFC 7009 revocation of the example's own tokens (its OAuth2TokenMixin rows) by oidc-logout's
HostRevocationEndpoint, registered on the example's AuthorizationServer and answering at the
example's own ``POST /oauth/revoke``, over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from authlib.integrations.flask_oauth2.signals import token_revoked
from sqlalchemy import select, update

from examples.authlib_idp.models import OAuth2Token, db
from oidc_logout.storage.models import OPSession, SessionParticipant, Termination
from oidc_logout.testing import CaptureServer
from oidc_logout.vocabulary import TargetKind

from .conftest import (
    SPA,
    WEBAPP,
    Browser,
    ExampleIdP,
    exchange,
    introspect,
    revoke,
    run_code_flow,
    signed_in,
    token_request,
    userinfo_status,
    verify_id_token,
)


@pytest.fixture
def host_clients(portal: dict[str, Any]) -> list[dict[str, Any]]:
    """WEBAPP, the public SPA and ``portal`` (a back-channel logout client)."""
    return [WEBAPP, SPA, portal]


def grant_terminations(idp: ExampleIdP) -> list[Termination]:
    with idp.app.app_context():
        return list(
            db.session.scalars(select(Termination).where(Termination.target_kind == TargetKind.GRANT))
        )


def test_revoking_an_access_token_ends_it_at_once_and_keeps_its_refresh_token(adopted: Any) -> None:
    """RFC 7009 §2.1: the access token is dead for introspection and for the host's own bearer
    validation the moment the 200 arrives; the refresh token of its row still refreshes.
    Authlib's token_revoked signal carries the host's own token row, as before adoption."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    seen: list[tuple[type, str]] = []

    def listener(_sender: Any, token: Any, **_: Any) -> None:
        seen.append((type(token), token.access_token))

    token_revoked.connect(listener)
    try:
        assert revoke(idp, portal, tokens["access_token"], "access_token").status_code == 200
    finally:
        token_revoked.disconnect(listener)
    assert seen == [(OAuth2Token, tokens["access_token"])]
    assert introspect(idp, portal, tokens["access_token"]) == {"active": False}
    assert userinfo_status(idp, tokens["access_token"]) == 401
    assert introspect(idp, portal, tokens["refresh_token"])["active"] is True
    refreshed = token_request(
        idp.url, portal, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 200, refreshed.text
    assert grant_terminations(idp) == []  # an access token is not a grant


def test_public_client_revokes_its_refresh_token_with_its_client_id(adopted: Any) -> None:
    """RFC 7009 §2.1: a public client identifies itself with client_id; its refresh token and
    the access token of the same grant stop working."""
    idp, _portal = adopted
    browser = Browser(idp.url)
    browser.login()
    tokens = exchange(idp.url, SPA, run_code_flow(browser, SPA)).json()
    assert revoke(idp, SPA, tokens["refresh_token"]).status_code == 200
    assert userinfo_status(idp, tokens["access_token"]) == 401
    refreshed = token_request(idp.url, SPA, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refreshed.status_code == 400


def test_refresh_revocation_ends_the_grant_and_records_it_without_a_logout(
    adopted: Any, rp: CaptureServer
) -> None:
    """RFC 7009 §2.1 SHOULD: revoking the refresh token invalidates the access tokens of the
    same grant -- here the rotation chain's, found through the OP session binding (the host's
    rotation is made to leave the old access token alive, as a host's revoke_old_credential
    may: it drops the old refresh token and keeps the access token). A second grant of the same client in the same session keeps working. As the turnkey's
    terminate(by_grant): one grant termination, no session ended, no back-channel logout."""
    idp, portal = adopted
    browser, first = signed_in(idp, portal)
    sid = verify_id_token(idp.url, first["id_token"])["sid"]
    rotated = token_request(idp.url, portal, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    chain = rotated.json()
    with idp.app.app_context():
        db.session.execute(
            update(OAuth2Token)
            .where(OAuth2Token.access_token == first["access_token"])
            .values(access_token_revoked_at=0, refresh_token_revoked_at=0, refresh_token=None)
        )
        db.session.commit()
    assert introspect(idp, portal, first["access_token"])["active"] is True
    assert userinfo_status(idp, first["access_token"]) == 200
    other = exchange(idp.url, portal, run_code_flow(browser, portal)).json()  # same session, new grant
    assert verify_id_token(idp.url, other["id_token"])["sid"] == sid

    assert revoke(idp, portal, chain["refresh_token"], "refresh_token").status_code == 200

    for token in (chain["refresh_token"], chain["access_token"], first["access_token"]):
        assert introspect(idp, portal, token) == {"active": False}
    assert userinfo_status(idp, chain["access_token"]) == 401
    assert userinfo_status(idp, first["access_token"]) == 401
    refused = token_request(idp.url, portal, grant_type="refresh_token", refresh_token=chain["refresh_token"])
    assert refused.status_code == 400
    assert introspect(idp, portal, other["access_token"])["active"] is True
    assert introspect(idp, portal, other["refresh_token"])["active"] is True
    (term,) = grant_terminations(idp)
    assert term.initiator == f"client:{portal['client_id']}"
    assert (term.sessions_ended, term.tokens_revoked, term.deliveries_written) == (0, 2, 0)
    with idp.app.app_context():
        session = db.session.get(OPSession, sid)
        assert session is not None and session.ended_at is None
        part = db.session.scalar(
            select(SessionParticipant).where(
                SessionParticipant.sid == sid, SessionParticipant.client_id == portal["client_id"]
            )
        )
        assert part is not None and part.ended_at is None
    # Revoking it again changes nothing and records nothing (§2.2).
    assert revoke(idp, portal, chain["refresh_token"]).status_code == 200
    assert len(grant_terminations(idp)) == 1
    assert rp.hits("/portal/backchannel") == []


def test_another_clients_token_is_refused_and_stays_active(adopted: Any) -> None:
    """RFC 7009 §2.1: the server "verifies whether the token was issued to the client making
    the revocation request. If this validation fails, the request is refused": invalid_grant,
    as at the turnkey endpoint, and the token keeps working."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    for meta in (WEBAPP, SPA):
        for kind in ("access_token", "refresh_token"):
            resp = revoke(idp, meta, tokens[kind], kind)
            assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant", resp.text
            assert introspect(idp, portal, tokens[kind])["active"] is True
    assert userinfo_status(idp, tokens["access_token"]) == 200
    assert grant_terminations(idp) == []


def test_an_id_token_is_an_unsupported_token_type(adopted: Any) -> None:
    """RFC 7009 §2.2.1: the server cannot revoke an ID token: unsupported_token_type, HTTP 400;
    the tokens issued with it stay active."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    resp = revoke(idp, portal, tokens["id_token"])
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_token_type"
    assert introspect(idp, portal, tokens["access_token"])["active"] is True
    assert introspect(idp, portal, tokens["refresh_token"])["active"] is True


def test_unknown_tokens_and_hints_are_not_errors(adopted: Any) -> None:
    """RFC 7009 §2.2: an invalid token is answered 200; §2.1: an unknown hint is only a hint."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    assert revoke(idp, portal, "no-such-token-" + "x" * 20).status_code == 200
    assert revoke(idp, portal, "\u00e9t\u00e9").status_code == 200
    assert revoke(idp, portal, tokens["access_token"], "id_token").status_code == 200
    assert introspect(idp, portal, tokens["access_token"]) == {"active": False}


CONCURRENT = 8


def test_concurrent_revocations_of_one_refresh_token_revoke_it_once(adopted: Any) -> None:
    """Eight requests revoking the same refresh token, released together against the running
    example: every one answers 200, the token and its access token are dead, and exactly one
    grant termination is recorded (conditional UPDATEs: one request wins, the rest find nothing
    left to revoke)."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    barrier = threading.Barrier(CONCURRENT)

    def one(_: int) -> int:
        barrier.wait(timeout=30)
        return revoke(idp, portal, tokens["refresh_token"], "refresh_token").status_code

    with ThreadPoolExecutor(CONCURRENT) as pool:
        statuses = list(pool.map(one, range(CONCURRENT)))
    assert statuses == [200] * CONCURRENT
    assert introspect(idp, portal, tokens["refresh_token"]) == {"active": False}
    assert introspect(idp, portal, tokens["access_token"]) == {"active": False}
    (term,) = grant_terminations(idp)
    assert term.tokens_revoked == 1
