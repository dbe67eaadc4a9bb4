"""A standard OIDC client library (Authlib's requests client) logs in to the OP unchanged."""

from __future__ import annotations

import secrets

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey
from authlib.oidc.core import CodeIDToken

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
    client = OAuth2Session(meta["client_id"], meta["client_secret"], scope="openid profile email",
                           redirect_uri=meta["redirect_uris"][0], code_challenge_method="S256")
    nonce = secrets.token_urlsafe(12)
    url, state = client.create_authorization_url(doc["authorization_endpoint"], code_verifier=verifier,
                                                 nonce=nonce)
    browser = Browser(idp.url)
    browser.login("bob")
    resp = browser.http.get(url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    token = client.fetch_token(doc["token_endpoint"], authorization_response=resp.headers["Location"],
                               code_verifier=verifier, state=state)
    keys = JsonWebKey.import_key_set(requests.get(doc["jwks_uri"], timeout=5).json())
    from authlib.jose import jwt as authlib_jwt

    claims = authlib_jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken,
                                claims_options={"iss": {"value": doc["issuer"]}},
                                claims_params={"nonce": nonce, "client_id": meta["client_id"]})
    claims.validate()
    assert claims["sub"] == "bob" and claims["sid"]
    info = client.get(doc["userinfo_endpoint"], timeout=5).json()
    assert info["sub"] == "bob" and info["email"] == "bob@example.org"
