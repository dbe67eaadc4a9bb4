"""OpenID Connect Discovery and the published keys."""

from __future__ import annotations

import requests
from authlib.oidc.discovery import OpenIDProviderMetadata

from examples.authlib_idp.models import SigningKey, db

from .conftest import ExampleIdP, start_example


def test_discovery_document_is_valid(idp: ExampleIdP) -> None:
    """The metadata passes Authlib's OpenID Provider Metadata validation and points here."""
    resp = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10)
    assert resp.status_code == 200
    doc = resp.json()
    OpenIDProviderMetadata(doc).validate()
    assert doc["issuer"] == idp.url
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "registration_endpoint",
        "revocation_endpoint",
    ):
        assert doc[key].startswith(f"{idp.url}/oauth/"), key
    assert doc["code_challenge_methods_supported"] == ["S256"]


def test_signing_key_survives_a_restart(database_url: str) -> None:
    """The key generated at first start is stored; a restart on the same database publishes
    the same key, so ID tokens issued before the restart still verify."""
    first = start_example(database_url)
    try:
        before = requests.get(f"{first.url}/oauth/jwks", timeout=10).json()
    finally:
        first.stop()
    second = start_example(database_url)
    try:
        after = requests.get(f"{second.url}/oauth/jwks", timeout=10).json()
        with second.app.app_context():
            assert db.session.scalar(db.select(db.func.count()).select_from(SigningKey)) == 1
    finally:
        second.stop()
    # The IdP's one ID token key, then oidc-logout's logout token keys (merged after adoption).
    assert [k["kid"] for k in before["keys"]].count(before["keys"][0]["kid"]) == 1
    assert after == before
