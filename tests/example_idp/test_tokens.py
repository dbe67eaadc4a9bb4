"""Token endpoint (code with PKCE, refresh), ID tokens, UserInfo and RFC 7009 revocation."""

from __future__ import annotations

import time

import pytest
import requests

from .conftest import (
    SPA,
    WEBAPP,
    Browser,
    ExampleIdP,
    exchange,
    revoke,
    run_code_flow,
    token_request,
    userinfo,
    verify_id_token,
)


@pytest.mark.parametrize("meta", [WEBAPP, SPA], ids=["confidential", "public"])
def test_code_exchange_gives_access_refresh_and_id_token(idp: ExampleIdP, meta: dict) -> None:
    """The code and its PKCE verifier buy an access token, a refresh token and an ID token
    signed with a key from the published JWKS, for this issuer, client and nonce."""
    browser = Browser(idp.url)
    browser.login("bob")
    before = int(time.time())
    flow = run_code_flow(browser, meta)
    resp = exchange(idp.url, meta, flow)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    token = resp.json()
    assert token["token_type"].lower() == "bearer"
    assert token["access_token"] and token["refresh_token"]
    assert token["expires_in"] == 3600
    assert set(token["scope"].split()) == {"openid", "profile", "email"}

    claims = verify_id_token(idp.url, token["id_token"])
    assert claims["iss"] == idp.url
    assert claims["aud"] == [meta["client_id"]]
    assert claims["nonce"] == flow.nonce
    assert claims["sub"] == userinfo(idp, token["access_token"]).json()["sub"]
    assert claims["preferred_username"] == "bob"
    assert before - 5 <= claims["auth_time"] <= claims["iat"] < claims["exp"]
    assert "at_hash" in claims


def test_id_token_header_names_its_key(idp: ExampleIdP) -> None:
    """The ID token's kid is a key of the JWKS, and the algorithm is RS256."""
    from joserfc.jws import extract_compact

    browser = Browser(idp.url)
    browser.login()
    token = exchange(idp.url, WEBAPP, run_code_flow(browser, WEBAPP)).json()
    header = extract_compact(token["id_token"].encode()).protected
    jwks = requests.get(f"{idp.url}/oauth/jwks", timeout=10).json()
    assert header["alg"] == "RS256"
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert all("d" not in k for k in jwks["keys"])


def test_auth_time_is_when_the_user_signed_in(idp: ExampleIdP) -> None:
    """Two codes for one sign-in carry the same auth_time."""
    browser = Browser(idp.url)
    browser.login()
    first = exchange(idp.url, WEBAPP, run_code_flow(browser, WEBAPP)).json()
    time.sleep(1.1)
    second = exchange(idp.url, WEBAPP, run_code_flow(browser, WEBAPP)).json()
    assert (
        verify_id_token(idp.url, first["id_token"])["auth_time"]
        == verify_id_token(idp.url, second["id_token"])["auth_time"]
    )


def test_wrong_verifier_is_refused(idp: ExampleIdP) -> None:
    """A code is worth nothing without the verifier of its challenge."""
    browser = Browser(idp.url)
    browser.login()
    flow = run_code_flow(browser, SPA)
    flow.verifier = "x" * 50
    resp = exchange(idp.url, SPA, flow)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_code_is_single_use(idp: ExampleIdP) -> None:
    """A second exchange of the same code fails."""
    browser = Browser(idp.url)
    browser.login()
    flow = run_code_flow(browser, WEBAPP)
    assert exchange(idp.url, WEBAPP, flow).status_code == 200
    again = exchange(idp.url, WEBAPP, flow)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_code_belongs_to_its_client(idp: ExampleIdP) -> None:
    """Another client cannot redeem the code."""
    browser = Browser(idp.url)
    browser.login()
    flow = run_code_flow(browser, WEBAPP)
    resp = token_request(
        idp.url,
        SPA,
        grant_type="authorization_code",
        code=flow.code,
        code_verifier=flow.verifier,
        redirect_uri=WEBAPP["redirect_uris"][0],
    )
    assert resp.status_code == 400


def test_wrong_client_secret_is_refused(idp: ExampleIdP) -> None:
    browser = Browser(idp.url)
    browser.login()
    flow = run_code_flow(browser, WEBAPP)
    resp = exchange(idp.url, {**WEBAPP, "client_secret": "wrong"}, flow)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


@pytest.mark.parametrize("meta", [WEBAPP, SPA], ids=["confidential", "public"])
def test_refresh_rotates_the_refresh_token(idp: ExampleIdP, meta: dict) -> None:
    """A refresh gives a new access and refresh token; the old refresh token is spent."""
    browser = Browser(idp.url)
    browser.login()
    token = exchange(idp.url, meta, run_code_flow(browser, meta)).json()
    resp = token_request(idp.url, meta, grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert new["access_token"] != token["access_token"]
    assert new["refresh_token"] != token["refresh_token"]
    assert userinfo(idp, new["access_token"]).status_code == 200
    assert userinfo(idp, token["access_token"]).status_code == 401

    reused = token_request(idp.url, meta, grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_refresh_can_narrow_the_scope(idp: ExampleIdP) -> None:
    browser = Browser(idp.url)
    browser.login()
    token = exchange(idp.url, WEBAPP, run_code_flow(browser, WEBAPP)).json()
    resp = token_request(
        idp.url, WEBAPP, grant_type="refresh_token", refresh_token=token["refresh_token"], scope="openid"
    )
    assert resp.status_code == 200
    assert userinfo(idp, resp.json()["access_token"]).json() == {"sub": "1"}


def test_userinfo_returns_the_claims_of_the_scope(idp: ExampleIdP) -> None:
    """UserInfo answers to the access token with the claims its scope allows."""
    browser = Browser(idp.url)
    browser.login("alice")
    token = exchange(idp.url, WEBAPP, run_code_flow(browser, WEBAPP, scope="openid email")).json()
    resp = userinfo(idp, token["access_token"])
    assert resp.status_code == 200
    assert resp.json() == {"sub": "1", "email": "alice@example.com"}
    post = requests.post(
        f"{idp.url}/oauth/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10
    )
    assert post.json() == resp.json()


def test_userinfo_needs_a_valid_token(idp: ExampleIdP) -> None:
    assert requests.get(f"{idp.url}/oauth/userinfo", timeout=10).status_code == 401
    assert userinfo(idp, "not-a-token").status_code == 401


def test_revoking_the_refresh_token_ends_both_tokens(idp: ExampleIdP) -> None:
    """RFC 7009: after revocation the refresh token is refused, and so is its access token."""
    browser = Browser(idp.url)
    browser.login()
    token = exchange(idp.url, WEBAPP, run_code_flow(browser, WEBAPP)).json()
    resp = revoke(idp, WEBAPP, token["refresh_token"], "refresh_token")
    assert resp.status_code == 200
    refreshed = token_request(
        idp.url, WEBAPP, grant_type="refresh_token", refresh_token=token["refresh_token"]
    )
    assert refreshed.status_code == 400
    assert userinfo(idp, token["access_token"]).status_code == 401


def test_revoking_the_access_token_keeps_the_refresh_token(idp: ExampleIdP) -> None:
    """With token_type_hint=access_token only the access token ends."""
    browser = Browser(idp.url)
    browser.login()
    token = exchange(idp.url, WEBAPP, run_code_flow(browser, WEBAPP)).json()
    assert revoke(idp, WEBAPP, token["access_token"], "access_token").status_code == 200
    assert userinfo(idp, token["access_token"]).status_code == 401
    refreshed = token_request(
        idp.url, WEBAPP, grant_type="refresh_token", refresh_token=token["refresh_token"]
    )
    assert refreshed.status_code == 200


def test_revoking_an_unknown_token_is_not_an_error(idp: ExampleIdP) -> None:
    """RFC 7009 §2.2: invalid tokens do not cause an error response."""
    assert revoke(idp, WEBAPP, "no-such-token").status_code == 200


def test_revocation_needs_client_authentication(idp: ExampleIdP) -> None:
    resp = requests.post(
        f"{idp.url}/oauth/revoke", data={"token": "x"}, auth=(WEBAPP["client_id"], "wrong"), timeout=10
    )
    assert resp.status_code == 401
