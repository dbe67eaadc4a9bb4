"""A standard OIDC client library (Authlib's requests client) logs in to the OP unchanged."""

from __future__ import annotations

import secrets

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.support.idp import Browser, client_meta, start_idp


@pytest.fixture
def idp(sqlite_url):
    server = start_idp(sqlite_url, clients=[client_meta("std-client", port=20555)])
    yield server
    server.stop()


def test_authlib_oauth2_session_completes_the_code_flow_with_discovery(idp):
    """Discovery + code flow + PKCE + ID token validation as an off-the-shelf client does it."""
    meta = client_meta("std-client", port=20555)
    doc = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=5).json()
    verifier = secrets.token_urlsafe(48)
    client = OAuth2Session(
        meta["client_id"],
        meta["client_secret"],
        scope="openid profile email",
        redirect_uri=meta["redirect_uris"][0],
        code_challenge_method="S256",
    )
    nonce = secrets.token_urlsafe(12)
    url, state = client.create_authorization_url(
        doc["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    browser = Browser(idp.url)
    browser.login("bob")
    resp = browser.http.get(url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    token = client.fetch_token(
        doc["token_endpoint"],
        authorization_response=resp.headers["Location"],
        code_verifier=verifier,
        state=state,
    )
    keys = KeySet.import_key_set(requests.get(doc["jwks_uri"], timeout=5).json())
    decoded = jose_jwt.decode(
        token["id_token"], keys, algorithms=doc["id_token_signing_alg_values_supported"]
    )
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": doc["issuer"]},
        aud={"essential": True, "value": meta["client_id"]},
        nonce={"essential": True, "value": nonce},
        sid={"essential": True},
    )
    registry.validate(decoded.claims)
    claims = decoded.claims
    assert claims["sub"] == "bob" and claims["sid"]
    info = client.get(doc["userinfo_endpoint"], timeout=5).json()
    assert info["sub"] == "bob" and info["email"] == "bob@example.org"
