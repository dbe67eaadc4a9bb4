"""The authorization code flow with PKCE over real HTTP, ID token with sid, participation."""

from __future__ import annotations

import json

import pytest
import requests
from jwcrypto import jwk, jwt

from tests.support.idp import Browser, authorize, client_meta, introspect, start_idp


@pytest.fixture
def idp(database_url):
    server = start_idp(database_url, clients=[client_meta("rp-a")])
    yield server
    server.stop()


def test_code_flow_issues_id_token_with_sid_signed_by_published_key(idp):
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    tokens = authorize(browser, client_meta("rp-a"), nonce="n-123")
    keys = jwk.JWKSet.from_json(requests.get(f"{idp.url}/jwks", timeout=5).text)
    id_token = jwt.JWT(jwt=tokens["id_token"], key=keys, algs=["RS256"])
    claims = json.loads(id_token.claims)
    assert claims["iss"] == idp.url
    assert claims["aud"] == ["rp-a"]
    assert claims["sub"] == "alice"
    assert claims["nonce"] == "n-123"
    assert len(claims["sid"]) >= 22
    assert id_token.token.jose_header["kid"]
    info = introspect(idp.url, client_meta("rp-a"), tokens["access_token"])
    assert info["active"] is True and info["sid"] == claims["sid"] and info["sub"] == "alice"


def test_discovery_lists_logout_support_and_endpoints(idp):
    doc = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=5).json()
    assert doc["issuer"] == idp.url
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True
    assert doc["frontchannel_logout_supported"] is True
    assert doc["end_session_endpoint"] == f"{idp.url}/end_session"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "none" not in doc["id_token_signing_alg_values_supported"]
