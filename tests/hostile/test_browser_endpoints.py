"""Issue 12 item 6: hostile characters (quotes, backslash, non-ASCII, DEL, NUL, CR/LF, other
controls) in every parameter of the browser endpoints (/authorize GET and POST, /login,
/end_session, /account) and the GET endpoints, signed in or not, on SQLite and PostgreSQL:
never a 5xx, never a redirect anywhere but a registered redirect_uri or the login page, and
no row changes unless a code was legitimately issued or a user legitimately signed in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oidc_logout.registration import create_client

from .conftest import HostileOP
from .strategies import NASTY_CHARS, hostile_params, nastier, nasty_text

PROPS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
CB = "https://rp.example.com/cb"
UNTRUSTED = "untrusted-h"
AUTHORIZE = {
    "response_type": "code",
    "client_id": "rp-h",
    "redirect_uri": CB,
    "scope": "openid profile",
    "state": "s-1",
    "nonce": "n-1",
    "code_challenge": "a" * 43,
    "code_challenge_method": "S256",
    "prompt": "consent",
    "max_age": "60",
    "ui_locales": "en",
    "login_hint": "alice",
}
EXTRA = ["consent", "csrf_token", "response_mode", "display", "acr_values", "request", "claims"]


@pytest.fixture(scope="module")
def browser(hostile_op: HostileOP) -> Iterator[dict[str, str]]:
    """A signed-in browser (its cookies) and an untrusted (self-registered) client."""
    provider = hostile_op.provider
    with provider.session_factory.begin() as db:
        create_client(
            db,
            {"redirect_uris": [CB], "token_endpoint_auth_method": "none"},
            dev_mode=False,
            trusted=False,
            client_id=UNTRUSTED,
        )
    client = hostile_op.app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post(
        "/login", data={"csrf_token": csrf, "username": "alice", "password": "wonderland", "next": "/account"}
    )
    assert resp.status_code == 303
    cookies = {c.key: c.value for c in client._cookies.values()}
    assert hostile_op.provider.settings.session_cookie_name in cookies
    return {"csrf": csrf, **cookies}


def _client(hostile_op: HostileOP, cookies: dict[str, str] | None) -> Any:
    client = hostile_op.app.test_client()
    for key, value in (cookies or {}).items():
        if key != "csrf":
            client.set_cookie(key, value)
    return client


def _no_5xx(resp: Any) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
    assert b"server_error" not in resp.get_data()
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"


def _allowed_location(location: str) -> bool:
    """RFC 9700 §4.11 / RFC 6749 §4.1.2.1: only the registered redirect_uri or our login page."""
    return location.startswith((CB + "?", "/login?", "/login"))


# -- the reported 500s, as explicit regressions ---------------------------------------------
@pytest.mark.parametrize("param", ["redirect_uri", "response_type"])
@pytest.mark.parametrize("bad", ['"', "\\", "\xe9", "\x7f", "\x00", "\r\n", '\u2603"\\'])
@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_authorize_with_hostile_redirect_uri_or_response_type_is_a_clear_error(
    hostile_op: HostileOP, browser: dict[str, str], param: str, bad: str, signed_in: bool
) -> None:
    """RFC 6749 §4.1.2.1: an unregistered redirect_uri is an error page (no redirect), an
    unsupported response_type an error redirected to the registered URI; never a 500."""
    before = hostile_op.fingerprint()
    params = {**AUTHORIZE, "prompt": ""}
    params[param] = params[param] + bad
    resp = _client(hostile_op, browser if signed_in else None).get("/authorize", query_string=params)
    _no_5xx(resp)
    if param == "redirect_uri":
        assert resp.status_code == 400 and "Location" not in resp.headers
        assert b"invalid_request" in resp.get_data()
    else:
        assert resp.status_code == 302 and resp.headers["Location"].startswith(CB + "?")
        assert "error=unsupported_response_type" in resp.headers["Location"]
    assert hostile_op.fingerprint() == before


@pytest.mark.parametrize(
    "next_url", ["/account\r\nSet-Cookie: x=y", "/x\n", "/x\x00", "/x\x85", "/\u2028", "/" + "a" * 5000]
)
def test_login_next_with_control_characters_falls_back_to_the_account_page(
    hostile_op: HostileOP, next_url: str
) -> None:
    """CR/LF (header injection) and other controls in 'next' after a valid sign-in: the
    session starts and the browser goes to /account; no 500 after the commit."""
    client = hostile_op.app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post(
        "/login", data={"csrf_token": csrf, "username": "alice", "password": "wonderland", "next": next_url}
    )
    _no_5xx(resp)
    assert resp.status_code == 303 and resp.headers["Location"] == "/account"


# -- properties --------------------------------------------------------------------------------
@PROPS
@given(
    params=hostile_params(AUTHORIZE, EXTRA),
    client_id=st.sampled_from(["rp-h", UNTRUSTED, "pub"]),
    method=st.sampled_from(["GET", "POST"]),
    signed_in=st.booleans(),
    with_csrf=st.booleans(),
)
def test_authorize_with_hostile_parameters(
    hostile_op: HostileOP,
    browser: dict[str, str],
    params: dict[str, str],
    client_id: str,
    method: str,
    signed_in: bool,
    with_csrf: bool,
) -> None:
    if params.get("client_id") == "rp-h":
        params["client_id"] = client_id
    if with_csrf and method == "POST":
        params["csrf_token"] = browser["csrf"]
    before = hostile_op.fingerprint()
    client = _client(hostile_op, browser if signed_in else None)
    if method == "GET":
        resp = client.get("/authorize", query_string=params)
    else:
        resp = client.post("/authorize", data=params)
    _no_5xx(resp)
    location = resp.headers.get("Location")
    if location is not None:
        assert _allowed_location(location), location
    if hostile_op.fingerprint() != before:
        # Only a legitimately issued code changes anything.
        assert location is not None and location.startswith(CB + "?") and "code=" in location


@PROPS
@given(
    fields=hostile_params(
        {"username": "alice", "password": "wonderland", "next": "/account"}, ["csrf_token", "confirm"]
    ),
    with_csrf=st.booleans(),
)
def test_login_with_hostile_fields(
    hostile_op: HostileOP, browser: dict[str, str], fields: dict[str, str], with_csrf: bool
) -> None:
    client = _client(hostile_op, browser)
    if with_csrf:
        fields["csrf_token"] = browser["csrf"]
    before = hostile_op.fingerprint()
    resp = client.post("/login", data=fields)
    _no_5xx(resp)
    assert resp.status_code in (200, 303, 400, 401, 429), resp.status_code
    if resp.status_code == 401:
        assert resp.headers.get("WWW-Authenticate")
    if resp.status_code == 303:
        loc = resp.headers["Location"]
        assert loc.startswith("/") and not loc.startswith("//") and loc.isprintable(), loc
    elif hostile_op.fingerprint() != before:
        raise AssertionError("a refused sign-in changed the database")


GET_PATHS = [
    "/.well-known/openid-configuration",
    "/jwks",
    "/login",
    "/account",
    "/authorize",
    "/end_session",
    "/userinfo",
    "/admin/terminations/x",
]


@PROPS
@given(
    path=st.sampled_from(GET_PATHS),
    params=st.dictionaries(nasty_text, nasty_text, max_size=6),
    signed_in=st.booleans(),
)
def test_every_get_endpoint_with_hostile_query(
    hostile_op: HostileOP, browser: dict[str, str], path: str, params: dict[str, str], signed_in: bool
) -> None:
    before = hostile_op.fingerprint()
    client = _client(hostile_op, browser if signed_in else None)
    resp = client.get(path + "?" + urlencode(params, errors="surrogatepass"))
    _no_5xx(resp)
    location = resp.headers.get("Location")
    if location is not None:
        assert _allowed_location(location) or location.startswith("/account"), location
    assert hostile_op.fingerprint() == before


@PROPS
@given(
    params=hostile_params(
        {
            "client_id": "rp-h",
            "post_logout_redirect_uri": "https://rp.example.com/bye",
            "state": "s",
            "confirm": "yes",
            "ui_locales": "en",
            "logout_hint": "alice",
        },
        ["csrf_token", "id_token_hint"],
    ),
    raw=st.sampled_from(NASTY_CHARS),
)
def test_end_session_confirmation_with_hostile_parameters(
    hostile_op: HostileOP, params: dict[str, str], raw: str
) -> None:
    """Without this browser's session and CSRF token nothing ends, whatever the parameters."""
    params.setdefault("csrf_token", raw)
    before = hostile_op.fingerprint()
    resp = hostile_op.client.post("/end_session", data=params)
    _no_5xx(resp)
    assert resp.status_code in (200, 400) and "Location" not in resp.headers
    assert hostile_op.session_alive()
    assert hostile_op.fingerprint() == before


@PROPS
@given(value=nastier("Bearer initial-access-token"))
def test_registration_bearer_with_hostile_characters(
    tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    """The initial access token compare (tokens.same_secret) with any header value."""
    app = _token_op(tmp_path_factory)
    try:
        resp = app.test_client().post(
            "/register",
            json={"redirect_uris": [CB]},
            headers={"Authorization": value.replace("\r", "").replace("\n", "")},
        )
    except ValueError:  # the test client itself refuses some header values
        return
    _no_5xx(resp)
    assert resp.status_code == 401 and resp.headers.get("WWW-Authenticate")


_TOKEN_OP: dict[str, Any] = {}


def _token_op(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if "app" not in _TOKEN_OP:
        from oidc_logout.config import Settings
        from oidc_logout.demo.idp import create_idp_app

        path = tmp_path_factory.mktemp("regtoken") / "op.db"
        _TOKEN_OP["app"] = create_idp_app(
            Settings(
                issuer="https://op.hostile.test",
                database_url=f"sqlite:///{path}",
                expiry_sweep_interval=0,
                embedded_dispatcher=False,
                registration_token="initial-access-token-" + "q" * 20,
            ),
            start_background=False,
        )
    return _TOKEN_OP["app"]
