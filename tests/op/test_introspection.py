"""RFC 7662 token introspection against a live OP on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select, update

from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import OPSession
from oidc_logout.termination import by_sid
from tests.support.idp import (
    Browser,
    IdP,
    authorize,
    client_meta,
    introspect,
    revoke,
    start_idp,
)

RP_A = client_meta("int-a")
RP_B = client_meta("int-b", secret="other-secret-" + "y" * 20)
PUBLIC = client_meta("int-pub", secret=None)
#: A resource server: client_credentials only, with the scope that lets it introspect any token.
RS = client_meta(
    "int-rs",
    secret="rs-secret-" + "r" * 20,
    grant_types=["client_credentials"],
    response_types=[],
    redirect_uris=[],
    post_logout_redirect_uris=[],
    scope="oidc_logout:introspect",
)


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    """One OP per module and database; every test uses its own login (session and grant)."""
    server = start_idp(module_database_url, clients=[RP_A, RP_B, PUBLIC, RS])
    yield server
    server.stop()


def _login_and_tokens(idp: IdP, meta: dict = RP_A, scope: str = "openid profile offline_access"):
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    return browser, authorize(browser, meta, scope=scope)


def _post(idp: IdP, data: dict, **kw) -> requests.Response:
    return requests.post(f"{idp.url}/introspect", data=data, timeout=10, **kw)


def _sid(idp: IdP, browser: Browser) -> str:
    from oidc_logout.tokens import token_hash

    cookie = browser.http.cookies.get("op_session")
    with idp.provider.session_factory() as db:
        return db.scalar(select(OPSession.sid).where(OPSession.cookie_hash == token_hash(cookie)))


def test_active_access_token_has_the_rfc7662_fields(idp):
    """RFC 7662 §2.2: an active token's response carries scope, client_id, sub, exp, iat, token_type (+ sid)."""
    browser, tokens = _login_and_tokens(idp)
    before = int(time.time())
    info = introspect(idp.url, RP_A, tokens["access_token"])
    assert info["active"] is True
    assert info["scope"] == "openid profile offline_access"
    assert info["client_id"] == RP_A["client_id"]
    assert info["sub"] == "alice"
    assert info["token_type"] == "Bearer"
    assert info["iss"] == idp.url
    assert info["sid"] == _sid(idp, browser)
    assert abs(info["iat"] - before) <= 5
    assert info["exp"] - info["iat"] == idp.settings.access_token_lifetime


def test_active_refresh_token_is_reported_with_its_type(idp):
    """RFC 7662 §2.2: the refresh token introspects as active with token_type refresh_token."""
    _, tokens = _login_and_tokens(idp)
    info = introspect(idp.url, RP_A, tokens["refresh_token"], hint="refresh_token")
    assert info["active"] is True and info["token_type"] == "refresh_token"
    assert info["exp"] - info["iat"] == idp.settings.refresh_token_lifetime


def test_introspection_is_inactive_the_moment_a_token_is_revoked(idp):
    """RFC 7662 §2.2: a revoked token is active false immediately (no caching)."""
    _, tokens = _login_and_tokens(idp)
    assert introspect(idp.url, RP_A, tokens["access_token"])["active"] is True
    assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200
    assert introspect(idp.url, RP_A, tokens["access_token"]) == {"active": False}


def test_tokens_are_inactive_once_their_session_ends(idp):
    """RFC 7662 §2.2 with Back-Channel Logout §2.7: ending the OP session deactivates its access token."""
    browser, tokens = _login_and_tokens(idp, scope="openid")
    idp.provider.terminate_now(by_sid(_sid(idp, browser)), reason="test", initiator="test")
    assert introspect(idp.url, RP_A, tokens["access_token"]) == {"active": False}
    assert introspect(idp.url, RP_A, tokens["refresh_token"]) == {"active": False}


def test_session_ended_directly_in_the_database_deactivates_tokens(idp):
    """RFC 7662 §2.2: introspection reflects the session's server-side state whatever the token row says."""
    browser, tokens = _login_and_tokens(idp, scope="openid")
    with idp.provider.session_factory.begin() as db:
        db.execute(update(OPSession).where(OPSession.sid == _sid(idp, browser)).values(ended_at=utcnow()))
    assert introspect(idp.url, RP_A, tokens["access_token"]) == {"active": False}


def test_unknown_token_is_inactive(idp):
    """RFC 7662 §2.2: a token that does not exist gives active false, not an error."""
    assert introspect(idp.url, RP_A, "no-such-token") == {"active": False}


def test_unrecognised_hint_is_ignored(idp):
    """RFC 7662 §2.1: token_type_hint is only a hint; an unknown value still finds the token."""
    _, tokens = _login_and_tokens(idp)
    assert introspect(idp.url, RP_A, tokens["access_token"], hint="foo")["active"] is True
    assert introspect(idp.url, RP_A, tokens["refresh_token"], hint="access_token")["active"] is True


@pytest.mark.parametrize("auth", [None, ("int-a", "wrong-secret"), ("nobody", "secret")])
def test_unauthenticated_caller_gets_401_invalid_client(idp, auth):
    """RFC 7662 §2.1/§2.3: the endpoint requires authorization; a failure is 401 invalid_client."""
    _, tokens = _login_and_tokens(idp)
    resp = _post(idp, {"token": tokens["access_token"]}, auth=auth)
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "invalid_client" and "active" not in body


def test_public_client_cannot_introspect(idp):
    """RFC 7662 §2.1: public clients cannot authenticate, so they cannot introspect (even their own token)."""
    _, tokens = _login_and_tokens(idp, PUBLIC, scope="openid")
    resp = _post(idp, {"token": tokens["access_token"], "client_id": PUBLIC["client_id"]})
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_client_secret_post_authentication_is_accepted(idp):
    """RFC 7662 §2.1 / RFC 6749 §2.3.1: credentials in the body authenticate the caller too."""
    _, tokens = _login_and_tokens(idp)
    resp = _post(
        idp,
        {
            "token": tokens["access_token"],
            "client_id": RP_A["client_id"],
            "client_secret": RP_A["client_secret"],
        },
    )
    assert resp.status_code == 200 and resp.json()["active"] is True


def test_client_cannot_introspect_another_clients_token(idp):
    """RFC 7662 §4: a caller not entitled to a token learns only active false."""
    _, tokens = _login_and_tokens(idp)
    assert introspect(idp.url, RP_B, tokens["access_token"]) == {"active": False}
    assert introspect(idp.url, RP_B, tokens["refresh_token"]) == {"active": False}
    assert introspect(idp.url, RP_A, tokens["access_token"])["active"] is True


def test_resource_server_with_introspect_scope_may_introspect_any_token(idp):
    """RFC 7662 §2.1: an authorized protected resource (scope oidc_logout:introspect) sees any token."""
    _, tokens = _login_and_tokens(idp)
    info = introspect(idp.url, RS, tokens["access_token"])
    assert info["active"] is True and info["client_id"] == RP_A["client_id"] and info["sub"] == "alice"


def test_missing_token_parameter_is_invalid_request(idp):
    """RFC 7662 §2.1: token is REQUIRED; without it the request is invalid_request."""
    resp = _post(idp, {"token_type_hint": "access_token"}, auth=(RP_A["client_id"], RP_A["client_secret"]))
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


def test_introspection_response_is_not_cached(idp):
    """RFC 7662 §4 / RFC 6749 §5.1: responses carrying token data must not be cached."""
    _, tokens = _login_and_tokens(idp)
    resp = _post(idp, {"token": tokens["access_token"]}, auth=(RP_A["client_id"], RP_A["client_secret"]))
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Content-Type"].startswith("application/json")
