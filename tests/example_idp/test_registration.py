"""RFC 7591 dynamic client registration at /oauth/register."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .conftest import (
    REGISTRATION_TOKEN,
    RP,
    Browser,
    ExampleIdP,
    exchange,
    run_code_flow,
    start_example,
)

METADATA = {
    "client_name": "Registered app",
    "redirect_uris": [f"{RP}/registered/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "scope": "openid profile",
}


def register(
    idp: ExampleIdP, metadata: dict[str, Any], token: str | None = REGISTRATION_TOKEN
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{idp.url}/oauth/register", json=metadata, headers=headers, timeout=10)


def test_registered_client_signs_users_in(idp: ExampleIdP) -> None:
    """With the initial access token, a client registers and then completes a code flow."""
    resp = register(idp, METADATA)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["client_id"] and body["client_secret"]
    assert body["client_secret_expires_at"] == 0
    assert body["client_name"] == "Registered app"
    assert body["token_endpoint_auth_method"] == "client_secret_basic"

    meta = {**METADATA, "client_id": body["client_id"], "client_secret": body["client_secret"]}
    browser = Browser(idp.url)
    browser.login()
    token = exchange(idp.url, meta, run_code_flow(browser, meta, scope="openid profile"))
    assert token.status_code == 200, token.text
    assert "id_token" in token.json()


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_registration_needs_the_initial_access_token(idp: ExampleIdP, token: str | None) -> None:
    """RFC 7591 §3: without the right initial access token, 401 invalid_token."""
    resp = register(idp, METADATA, token=token)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_token"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_public_client_gets_no_secret(idp: ExampleIdP) -> None:
    resp = register(idp, {**METADATA, "token_endpoint_auth_method": "none"})
    assert resp.status_code == 201, resp.text
    assert "client_secret" not in resp.json()


def test_defaults_of_rfc7591_are_filled_in(idp: ExampleIdP) -> None:
    """Omitted grant_types/response_types mean authorization_code/code (RFC 7591 §2)."""
    resp = register(idp, {"redirect_uris": METADATA["redirect_uris"]})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["grant_types"] == ["authorization_code"]
    assert body["response_types"] == ["code"]
    assert body["scope"] == "openid profile email"


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({**METADATA, "scope": "openid admin"}, "invalid_client_metadata"),
        ({**METADATA, "grant_types": ["password"]}, "invalid_client_metadata"),
        ({**METADATA, "response_types": ["token"]}, "invalid_client_metadata"),
        ({**METADATA, "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({**METADATA, "id_token_signed_response_alg": "none"}, "invalid_client_metadata"),
        ({**METADATA, "redirect_uris": ["https://rp.example/cb#fragment"]}, "invalid_client_metadata"),
        ({k: v for k, v in METADATA.items() if k != "redirect_uris"}, "invalid_redirect_uri"),
    ],
    ids=["scope", "grant", "response-type", "auth-method", "alg-none", "fragment", "no-redirect-uri"],
)
def test_metadata_the_server_does_not_support_is_refused(idp: ExampleIdP, metadata: dict, error: str) -> None:
    resp = register(idp, metadata)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == error


@pytest.fixture
def production_idp(database_url: str) -> Iterator[ExampleIdP]:
    example = start_example(database_url, dev=False)
    yield example
    example.stop()


def test_without_dev_mode_redirect_uris_must_be_https_and_not_loopback(production_idp: ExampleIdP) -> None:
    """Outside --dev, http and loopback redirect URIs are refused; https ones are accepted."""
    for uri in (f"{RP}/cb", "https://127.0.0.1/cb", "https://localhost/cb", "http://rp.example/cb"):
        resp = register(production_idp, {**METADATA, "redirect_uris": [uri]})
        assert resp.status_code == 400, uri
        assert resp.json()["error"] == "invalid_redirect_uri"
    assert (
        register(production_idp, {**METADATA, "redirect_uris": ["https://rp.example/cb"]}).status_code == 201
    )


def test_without_a_token_configured_registration_is_closed_outside_dev(database_url: str) -> None:
    """No REGISTRATION_TOKEN: registration is open in dev mode and closed otherwise."""
    closed = start_example(database_url, dev=False, registration_token=None)
    try:
        resp = register(closed, {**METADATA, "redirect_uris": ["https://rp.example/cb"]}, token=None)
        assert resp.status_code == 400
        assert resp.json()["error"] == "access_denied"
    finally:
        closed.stop()
    dev = start_example(database_url, dev=True, registration_token=None)
    try:
        assert register(dev, METADATA, token=None).status_code == 201
    finally:
        dev.stop()
