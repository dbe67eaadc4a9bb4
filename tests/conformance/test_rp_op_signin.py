"""The rp profile's OP signs users in, so that any RP can be driven without a test hook:
authorization endpoint approving at once (code, id_token, code id_token; query, fragment,
form_post), token endpoint with PKCE S256 and client_secret_basic/_post, ID tokens with
``sid`` signed by the key at /jwks. Spec references are to OIDC Core 1.0 and RFC 6749/7636."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from jwcrypto import jwk, jwt

from oidc_logout_conformance.adapters import auto_submits, parse_html
from oidc_logout_conformance.rp_op import SESSION_COOKIE, RunnerOP, left_hash

CLIENT, SECRET = "signin-rp", "signin-secret"
REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def op() -> Iterator[RunnerOP]:
    server = RunnerOP().start()
    server.register_client(CLIENT, SECRET, (REDIRECT,))
    server.register_client("public-rp", None, ())
    yield server
    server.stop()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(op: RunnerOP, ua: requests.Session | None = None, **params: str) -> requests.Response:
    query = {
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid",
        "state": "st-1",
        "nonce": "n-1",
        **params,
    }
    return (ua or requests.Session()).get(op.issuer + "/authorize", params=query, allow_redirects=False)


def answer(resp: requests.Response) -> dict[str, str]:
    assert resp.status_code == 302, resp.text
    parts = urlsplit(resp.headers["Location"])
    return {k: v[0] for k, v in parse_qs(parts.query or parts.fragment).items()}


def claims_of(op: RunnerOP, id_token: str) -> dict[str, Any]:
    keys = jwk.JWKSet.from_json(requests.get(op.issuer + "/jwks", timeout=5).text)
    token = jwt.JWT(jwt=id_token, key=keys, algs=["RS256"], check_claims={"iss": op.issuer, "exp": None})
    return dict(json.loads(token.claims))


def test_discovery_advertises_the_sign_in(op: RunnerOP) -> None:
    meta = requests.get(op.issuer + "/.well-known/openid-configuration", timeout=5).json()
    assert meta["authorization_endpoint"] == op.issuer + "/authorize"
    assert meta["token_endpoint"] == op.issuer + "/token"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"code", "id_token"} <= set(meta["response_types_supported"])
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True


def test_code_flow_with_pkce_and_client_secret_basic(op: RunnerOP) -> None:
    """Core §3.1.2.5 (code and state to the redirect URI), §3.1.3.3 (token response),
    §3.1.3.6 (at_hash); Back-Channel §2.1 (sid in the ID token)."""
    ua = requests.Session()
    ua.cookies.set(SESSION_COOKIE, op.open_session("alice", "sid-alice-1"), domain="127.0.0.1", path="/")
    verifier, challenge = pkce()
    got = answer(authorize(op, ua, code_challenge=challenge, code_challenge_method="S256"))
    assert got["state"] == "st-1"
    resp = requests.post(
        op.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": got["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=(CLIENT, SECRET),
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    assert "no-store" in resp.headers["Cache-Control"]
    tokens = resp.json()
    claims = claims_of(op, tokens["id_token"])
    assert (claims["sub"], claims["sid"], claims["aud"], claims["nonce"]) == (
        "alice",
        "sid-alice-1",
        CLIENT,
        "n-1",
    )
    assert claims["at_hash"] == left_hash(tokens["access_token"])
    # RFC 6749 §4.1.2: a code is used once
    again = requests.post(
        op.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": got["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=(CLIENT, SECRET),
        timeout=5,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_client_secret_post_and_wrong_secret(op: RunnerOP) -> None:
    """RFC 6749 §2.3.1 (client_secret_post), §5.2 (invalid_client is 401)."""
    code = answer(authorize(op))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": CLIENT}
    bad = requests.post(op.issuer + "/token", data={**form, "client_secret": "wrong"}, timeout=5)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    ok = requests.post(op.issuer + "/token", data={**form, "client_secret": SECRET}, timeout=5)
    # the failed attempt did not consume the code: authentication comes first
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("verifier", ["", "not-the-verifier"])
def test_pkce_verifier_must_match(op: RunnerOP, verifier: str) -> None:
    """RFC 7636 §4.6: the verifier must hash to the challenge of the authorization request."""
    _, challenge = pkce()
    code = answer(authorize(op, code_challenge=challenge, code_challenge_method="S256"))["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier:
        data["code_verifier"] = verifier
    resp = requests.post(op.issuer + "/token", data=data, auth=(CLIENT, SECRET), timeout=5)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def test_public_client_needs_pkce(op: RunnerOP) -> None:
    got = answer(authorize(op, client_id="public-rp", redirect_uri="http://127.0.0.1:9/cb"))
    assert got["error"] == "invalid_request" and got["state"] == "st-1"


def test_form_post_id_token_and_hybrid_c_hash(op: RunnerOP) -> None:
    """OAuth 2.0 Form Post Response Mode §2 (an auto-submitting form), Core §3.2.2.5
    (id_token response), §3.3.2.11 (c_hash)."""
    resp = authorize(op, response_type="id_token", response_mode="form_post")
    assert resp.status_code == 200
    page = parse_html(resp.text)
    assert auto_submits(page) and page.forms[0].action == REDIRECT and page.forms[0].method == "post"
    fields = {n: v for n, _, v in page.forms[0].inputs}
    assert fields["state"] == "st-1"
    assert claims_of(op, fields["id_token"])["nonce"] == "n-1"
    hybrid = authorize(op, response_type="code id_token", response_mode="form_post")
    fields = {n: v for n, _, v in parse_html(hybrid.text).forms[0].inputs}
    assert claims_of(op, fields["id_token"])["c_hash"] == left_hash(fields["code"])


def test_id_token_needs_nonce_and_no_query_mode(op: RunnerOP) -> None:
    """Core §3.2.2.1: nonce REQUIRED for id_token; Multiple Response Types §5: not in the query."""
    assert answer(authorize(op, response_type="id_token", nonce=""))["error"] == "invalid_request"
    assert (
        answer(authorize(op, response_type="id_token", response_mode="query"))["error"] == "invalid_request"
    )


def test_unregistered_redirect_uri_is_a_page_not_a_redirect(op: RunnerOP) -> None:
    """Core §3.1.2.6 / RFC 6749 §4.1.2.1: never redirect to an unverified URI."""
    resp = authorize(op, redirect_uri="http://127.0.0.1:9/elsewhere")
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert authorize(op, client_id="nobody").status_code == 400


def test_without_op_session_the_test_user_signs_in_and_keeps_the_session(op: RunnerOP) -> None:
    """A user agent with no OP session is the test user in a new OP session (a new sid);
    the session cookie then gives it the same sid (single sign-on), another agent another."""
    ua = requests.Session()

    def sid_of(agent: requests.Session) -> tuple[str, str]:
        code = answer(authorize(op, agent))["code"]
        tokens = requests.post(
            op.issuer + "/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
            auth=(CLIENT, SECRET),
            timeout=5,
        ).json()
        c = claims_of(op, tokens["id_token"])
        return c["sub"], c["sid"]

    first = sid_of(ua)
    assert first[0] == "conformance-user"
    assert sid_of(ua) == first
    assert sid_of(requests.Session())[1] != first[1]
