"""RP-Initiated Logout URL and refresh-token revocation (RFC 7009) against a loopback OP."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from oidc_logout.rp import DiscoveryClient, RevocationError, build_end_session_url, revoke_refresh_token

from .conftest import FakeOP


def test_end_session_url_carries_all_parameters_and_keeps_existing_query(op: FakeOP) -> None:
    meta = DiscoveryClient(op.issuer).get()
    url = build_end_session_url(
        meta,
        id_token_hint="idt",
        post_logout_redirect_uri="https://rp/after",
        state="s1",
        client_id="c1",
        logout_hint="alice",
        ui_locales="fr en",
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == op.issuer + "/logout"
    q = parse_qs(parts.query)
    assert q == {
        "ui": ["1"],
        "id_token_hint": ["idt"],
        "post_logout_redirect_uri": ["https://rp/after"],
        "state": ["s1"],
        "client_id": ["c1"],
        "logout_hint": ["alice"],
        "ui_locales": ["fr en"],
    }


def test_end_session_url_requires_the_endpoint(op: FakeOP) -> None:
    op.discovery_overrides["end_session_endpoint"] = None
    with pytest.raises(ValueError):
        build_end_session_url(DiscoveryClient(op.issuer).get(), id_token_hint="x")


def test_refresh_token_is_revoked_with_client_secret_basic(op: FakeOP) -> None:
    meta = DiscoveryClient(op.issuer).get()
    revoke_refresh_token(meta, "rt-1", client_id="c:1", client_secret="s e/cret")
    [call] = op.revocations
    assert call["form"] == {"token": "rt-1", "token_type_hint": "refresh_token"}
    user, secret = base64.b64decode(call["authorization"].split()[1]).decode().split(":")
    assert (user, secret) == ("c%3A1", "s%20e%2Fcret")  # RFC 6749 §2.3.1 form-encoding


def test_refresh_token_is_revoked_with_client_secret_post(op: FakeOP) -> None:
    meta = DiscoveryClient(op.issuer).get()
    revoke_refresh_token(meta, "rt-2", client_id="c1", client_secret="sec", auth_method="client_secret_post")
    [call] = op.revocations
    assert call["authorization"] is None
    assert call["form"] == {
        "token": "rt-2",
        "token_type_hint": "refresh_token",
        "client_id": "c1",
        "client_secret": "sec",
    }


@pytest.mark.parametrize(("status", "reason"), [(503, "unavailable"), (401, "bad_status")])
def test_failed_revocation_raises_with_reason(op: FakeOP, status: int, reason: str) -> None:
    op.revocation_status = status
    with pytest.raises(RevocationError) as info:
        revoke_refresh_token(DiscoveryClient(op.issuer).get(), "rt", client_id="c", client_secret="s")
    assert info.value.reason == reason
