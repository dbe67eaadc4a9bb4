"""Refresh-token rotation is atomic (RFC 9700 §4.14.2): of concurrent refreshes with one
refresh token exactly one wins, the others count as reuse. Real concurrent HTTP requests
against a live OP on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from oidc_logout.storage.models import Grant, Token
from oidc_logout.tokens import token_hash
from tests.support.idp import Browser, IdP, authorize, client_meta, introspect, refresh, start_idp

from ._race import race_posts, summary

RP = client_meta("refresh-race")
TRIALS = 15
CONTENDERS = 3


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    server = start_idp(module_database_url, clients=[RP])
    yield server
    server.stop()


def _tokens(idp: IdP) -> dict:
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    return authorize(browser, RP, scope="openid offline_access")


def _grant(idp: IdP, refresh_token: str) -> Grant:
    with idp.provider.session_factory() as db:
        grant_id = db.scalar(select(Token.grant_id).where(Token.token_hash == token_hash(refresh_token)))
        grant = db.get(Grant, grant_id)
        assert grant is not None
        return grant


def test_concurrent_refreshes_with_one_token_have_one_winner(idp: IdP) -> None:
    """RFC 9700 §4.14.2: one refresh token, presented concurrently, rotates once; the other
    presentations are reuse (invalid_grant, never a 500) and revoke the grant, so no second
    token chain survives."""
    failures: list[str] = []
    for trial in range(TRIALS):
        tokens = _tokens(idp)
        responses = race_posts(
            f"{idp.url}/token",
            {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            CONTENDERS,
            auth=(RP["client_id"], RP["client_secret"]),
        )
        seen = summary(responses)
        assert all(s < 500 for s, _ in seen), f"trial {trial}: {seen}"
        winners = [r.json() for r in responses if r.status_code == 200]
        if len(winners) != 1 or sorted(seen)[1:] != [(400, "invalid_grant")] * (CONTENDERS - 1):
            failures.append(f"trial {trial}: {seen}")
            continue
        # The loser's presentation was reuse: the whole grant ends, the winner's chain too.
        new = winners[0]
        if (
            _grant(idp, tokens["refresh_token"]).revoked_at is None
            or introspect(idp.url, RP, new["refresh_token"])["active"]
            or refresh(idp.url, RP, new["refresh_token"]).status_code != 400
        ):
            failures.append(f"trial {trial}: the winner's chain survived a reuse")
    assert not failures, f"{len(failures)}/{TRIALS} trials: " + "; ".join(failures)


def test_every_live_refresh_token_of_a_grant_is_single_use(idp: IdP) -> None:
    """RFC 9700 §4.14.2: after any number of sequential rotations, one live refresh token."""
    tokens = _tokens(idp)
    current = tokens["refresh_token"]
    for _ in range(3):
        resp = refresh(idp.url, RP, current)
        assert resp.status_code == 200, resp.text
        current = resp.json()["refresh_token"]
    grant = _grant(idp, current)
    with idp.provider.session_factory() as db:
        live = list(
            db.scalars(
                select(Token.id).where(
                    Token.grant_id == grant.id, Token.kind == "refresh_token", Token.revoked_at.is_(None)
                )
            )
        )
    assert len(live) == 1
