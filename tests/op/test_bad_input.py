"""Bad input never gives a 500 and changes nothing: every refusal is the spec's JSON error
(``error`` + ``error_description``; RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 7662 §2.3, RFC 7591
§3.2.2), or the error page on browser endpoints."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from oidc_logout.storage.models import (
    AuthorizationCode,
    Client,
    Delivery,
    Grant,
    OPSession,
    SessionParticipant,
    Termination,
    Token,
)
from tests.support.idp import (
    Browser,
    IdP,
    authorize,
    client_meta,
    introspect,
    start_idp,
)

RP = client_meta("bad-a", backchannel_logout_uri="http://127.0.0.1:9/bc")
AUTH = (RP["client_id"], RP["client_secret"])


@dataclass
class Env:
    idp: IdP
    tokens: dict[str, Any]
    browser: Browser


@pytest.fixture(scope="module")
def env(module_database_url: str) -> Iterator[Env]:
    """One OP per module and database, with a live session and tokens that bad input must not touch."""
    server = start_idp(module_database_url, clients=[RP], registration_open=True)
    browser = Browser(server.url)
    assert browser.login().status_code == 303
    tokens = authorize(browser, RP, scope="openid offline_access")
    yield Env(server, tokens, browser)
    server.stop()


def _state(idp: IdP) -> dict[str, int]:
    """Row counts of everything a request could create, end or revoke."""
    with idp.provider.session_factory() as db:

        def count(model, *where):  # type: ignore[no-untyped-def]
            return db.scalar(select(func.count()).select_from(model).where(*where))

        return {
            "clients": count(Client),
            "codes": count(AuthorizationCode),
            "grants": count(Grant),
            "grants_revoked": count(Grant, Grant.revoked_at.is_not(None)),
            "tokens": count(Token),
            "tokens_revoked": count(Token, Token.revoked_at.is_not(None)),
            "sessions": count(OPSession),
            "sessions_ended": count(OPSession, OPSession.ended_at.is_not(None)),
            "participants": count(SessionParticipant),
            "terminations": count(Termination),
            "deliveries": count(Delivery),
        }


def _check(
    env: Env,
    method: str,
    path: str,
    *,
    expect: int | tuple[int, ...] | None = None,
    error: str | None = None,
    html: bool = False,
    **kw: Any,
) -> requests.Response:
    before = _state(env.idp)
    resp = requests.request(method, f"{env.idp.url}{path}", timeout=10, allow_redirects=False, **kw)
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if expect is not None:
        expected = expect if isinstance(expect, tuple) else (expect,)
        assert resp.status_code in expected, (resp.status_code, resp.text[:300])
    if html:
        assert resp.headers["Content-Type"].startswith("text/html")
    else:
        assert resp.headers["Content-Type"].startswith("application/json"), resp.text[:200]
        body = resp.json()
        assert isinstance(body.get("error"), str) and body["error"]
        assert "error_description" in body
        if error is not None:
            assert body["error"] == error, body
    assert _state(env.idp) == before, "a refused request must change nothing"
    assert introspect(env.idp.url, RP, env.tokens["access_token"])["active"] is True
    return resp


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


TOKEN_ENDPOINTS = ["/token", "/revoke", "/introspect"]


@pytest.mark.parametrize("path", ["/revoke", "/introspect"])
def test_missing_token_is_invalid_request(env, path):
    """RFC 7009 §2.1 / RFC 7662 §2.1: the token parameter is REQUIRED."""
    _check(
        env,
        "POST",
        path,
        data={"token_type_hint": "access_token"},
        auth=AUTH,
        expect=400,
        error="invalid_request",
    )
    _check(env, "POST", path, data={"token": ""}, auth=AUTH, expect=400, error="invalid_request")


@pytest.mark.parametrize("path", TOKEN_ENDPOINTS)
@pytest.mark.parametrize(
    "header",
    [
        {"Authorization": "Basic !!!"},
        _basic(b"bad-a"),  # no colon
        _basic(b":" + RP["client_secret"].encode()),  # empty client_id
        _basic(b"\xff\xfe:\xff"),  # not UTF-8
        {"Authorization": "Basic " + "ÄÖÜ"},  # not ASCII
        _basic(b"bad\x00a:secret"),  # NUL in the client_id
        {"Authorization": "Basic"},
        {"Authorization": "Bearer " + "x" * 40},
    ],
)
def test_malformed_authorization_header_is_invalid_client(env, path, header):
    """RFC 6749 §2.3.1 / §5.2: malformed client credentials are invalid_client (401), never a 500."""
    headers = {k: v.encode("latin-1") if not v.isascii() else v for k, v in header.items()}
    data = {
        "token": env.tokens["access_token"],
        "grant_type": "refresh_token",
        "refresh_token": env.tokens["refresh_token"],
    }
    _check(env, "POST", path, data=data, headers=headers, expect=(400, 401), error="invalid_client")


@pytest.mark.parametrize("path", TOKEN_ENDPOINTS)
def test_json_body_is_refused_with_invalid_request(env, path):
    """RFC 6749 §3.2 / RFC 7009 §2.1 / RFC 7662 §2.1: these endpoints take application/x-www-form-urlencoded."""
    _check(
        env,
        "POST",
        path,
        json={
            "token": env.tokens["access_token"],
            "grant_type": "refresh_token",
            "refresh_token": env.tokens["refresh_token"],
        },
        auth=AUTH,
        expect=400,
        error="invalid_request",
    )


@pytest.mark.parametrize("path", [*TOKEN_ENDPOINTS, "/register"])
def test_oversized_body_is_413_json_error(env, path):
    """Settings.max_request_bytes (64 KiB): a larger body is refused with 413 and a JSON error."""
    if path == "/register":
        kw: dict[str, Any] = {
            "data": b'{"client_name": "' + b"x" * 70_000 + b'"}',
            "headers": {"Content-Type": "application/json"},
        }
    else:
        kw = {"data": {"token": "x" * 70_000, "grant_type": "refresh_token"}, "auth": AUTH}
    _check(env, "POST", path, expect=413, **kw)


@pytest.mark.parametrize("path", TOKEN_ENDPOINTS)
def test_unknown_client_is_invalid_client(env, path):
    """RFC 6749 §5.2: an unknown client is invalid_client (401 with Basic, 400 or 401 in the body)."""
    data = {
        "token": env.tokens["access_token"],
        "grant_type": "refresh_token",
        "refresh_token": env.tokens["refresh_token"],
    }
    _check(
        env, "POST", path, data=data, auth=("no-such-client", "secret"), expect=401, error="invalid_client"
    )
    _check(
        env,
        "POST",
        path,
        data={**data, "client_id": "no-such-client", "client_secret": "s"},
        expect=(400, 401),
        error="invalid_client",
    )
    _check(
        env,
        "POST",
        path,
        data={**data, "client_id": "nul\x00client"},
        expect=(400, 401),
        error="invalid_client",
    )


@pytest.mark.parametrize("path", [*TOKEN_ENDPOINTS, "/register"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_on_post_only_endpoint_is_405_json(env, path, method):
    """RFC 9110 §15.5.6: a method the resource does not support is 405, answered as a JSON error."""
    resp = _check(env, method, path, expect=405, error="invalid_request")
    assert "POST" in resp.headers.get("Allow", "")


@pytest.mark.parametrize("path", ["/nope", "/token/extra", "/.well-known/nope", "/admin/x"])
def test_unknown_path_is_json_404(env, path):
    """Unknown paths give a JSON not_found error, never an HTML traceback."""
    _check(env, "GET", path, expect=404, error="not_found")


@pytest.mark.parametrize(
    "data",
    [
        {
            "grant_type": "authorization_code",
            "code": "not-a-code",
            "redirect_uri": RP["redirect_uris"][0],
            "code_verifier": "v" * 43,
        },
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": "\x00" * 5},
        {"grant_type": "refresh_token", "refresh_token": "x" * 5000},
        {
            "grant_type": "authorization_code",
            "code": "c\x00",
            "redirect_uri": "\x00",
            "code_verifier": "\x00",
        },
    ],
)
def test_bad_token_requests_are_spec_errors(env, data):
    """RFC 6749 §5.2: invalid token requests give invalid_request/invalid_grant/unsupported_grant_type."""
    resp = _check(env, "POST", "/token", data=data, auth=AUTH, expect=400)
    assert resp.json()["error"] in ("invalid_request", "invalid_grant", "unsupported_grant_type")


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "password", "username": "alice", "password": "x"},
        {"grant_type": ""},
        {},
    ],
)
def test_unsupported_grant_type_changes_nothing(env, data):
    """RFC 6749 §5.2: a grant type the server does not support is unsupported_grant_type (400)."""
    before = _state(env.idp)
    resp = requests.post(f"{env.idp.url}/token", data=data, auth=AUTH, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"] in ("unsupported_grant_type", "invalid_request")
    assert _state(env.idp) == before


def test_unsupported_grant_type_has_error_description(env):
    """RFC 6749 §5.2: every token endpoint error carries error_description."""
    _check(
        env,
        "POST",
        "/token",
        data={"grant_type": "password"},
        auth=AUTH,
        expect=400,
        error="unsupported_grant_type",
    )


@pytest.mark.parametrize(
    "params",
    [
        {"id_token_hint": "a.b.c"},
        {"id_token_hint": "not-a-jwt", "post_logout_redirect_uri": "https://evil.example/"},
        {"post_logout_redirect_uri": "https://evil.example/"},
        {"client_id": "no-such-client"},
        {"client_id": "x" * 300},
        {"client_id": RP["client_id"], "post_logout_redirect_uri": "javascript:alert(1)"},
        {"state": "s" * 9000},
        {"id_token_hint": "\x00\xff"},
    ],
)
def test_garbage_end_session_params_are_refused_without_logout(env, params):
    """RP-Initiated §4: an invalid logout request is an error page, with no redirect and no logout."""
    resp = _check(env, "GET", "/end_session", params=params, expect=400, html=True)
    assert "Location" not in resp.headers


def test_nul_client_id_at_end_session_is_refused(env):
    """RP-Initiated §4: a client_id that cannot exist is an error page, never a 500."""
    _check(env, "GET", "/end_session", params={"client_id": "bad\x00id"}, expect=400, html=True)


def test_end_session_post_with_json_is_refused(env):
    """RP-Initiated §2: POSTed logout requests are form-serialized; JSON is refused, nothing ends."""
    _check(env, "POST", "/end_session", json={"client_id": RP["client_id"]}, expect=400, html=True)


@pytest.mark.parametrize("nonce", ["n\x00n", "n" * 3000])
def test_unstorable_nonce_is_an_error_redirect_not_a_500(env, nonce):
    """Core 1.0 §3.1.2.6 / RFC 6749 §4.1.2.1: an invalid nonce is invalid_request returned to the client."""
    before = _state(env.idp)
    resp = env.browser.http.get(
        f"{env.idp.url}/authorize",
        params={
            "response_type": "code",
            "client_id": RP["client_id"],
            "redirect_uri": RP["redirect_uris"][0],
            "scope": "openid",
            "state": "st",
            "nonce": nonce,
            "code_challenge": "c" * 43,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302, resp.text[:300]
    assert resp.headers["Location"].startswith(RP["redirect_uris"][0])
    assert "error=invalid_request" in resp.headers["Location"]
    assert _state(env.idp) == before


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "bad\x00id", "response_type": "code"},
        {"client_id": "x" * 1000, "response_type": "code"},
        {"response_type": "code"},
    ],
)
def test_garbage_authorize_params_are_an_error_page(env, params):
    """RFC 6749 §4.1.2.1: with no valid client/redirect URI the OP shows an error and does not redirect."""
    resp = _check(env, "GET", "/authorize", params=params, expect=400, html=True)
    assert "Location" not in resp.headers


def test_revoke_with_duplicated_token_parameter_changes_nothing_it_should_not(env):
    """RFC 6749 §3.2: parameters must not be repeated; the OP never revokes a token it was not asked to."""
    resp = requests.post(
        f"{env.idp.url}/revoke", timeout=10, auth=AUTH, data=[("token", "unknown-1"), ("token", "unknown-2")]
    )
    assert resp.status_code in (200, 400)
    assert introspect(env.idp.url, RP, env.tokens["access_token"])["active"] is True
