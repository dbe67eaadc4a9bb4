"""Issue 12 item 9: hardening headers on every OP response. RFC 6749 §5.2 / RFC 6750 §3 /
RFC 9110 §15.5.2: every 401 carries WWW-Authenticate; every response X-Content-Type-Options:
nosniff; pages, error pages included, refuse framing (X-Frame-Options)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
import requests

from tests.support.idp import Browser, IdP, client_meta, start_idp

RP = client_meta("hdr-rp")
AUTH = (RP["client_id"], RP["client_secret"])
REGISTRATION_TOKEN = "initial-" + "t" * 24


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    server = start_idp(module_database_url, clients=[RP], registration_token=REGISTRATION_TOKEN)
    yield server
    server.stop()


def _basic(cid: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()}


def _401s(idp: IdP) -> list[tuple[str, requests.Response]]:
    u = idp.url
    browser = Browser(u)
    out = [("login wrong password", browser.login(password="wrong"))]
    for path in ("/token", "/revoke", "/introspect"):
        data = {"grant_type": "refresh_token", "refresh_token": "x", "token": "x"}
        out.append(
            (
                f"{path} basic wrong secret",
                requests.post(u + path, data=data, headers=_basic(RP["client_id"], "wrong"), timeout=10),
            )
        )
        out.append(
            (
                f"{path} basic unknown client",
                requests.post(u + path, data=data, headers=_basic("nobody", "x"), timeout=10),
            )
        )
        out.append(
            (
                f"{path} post wrong secret",
                requests.post(
                    u + path,
                    data={**data, "client_id": RP["client_id"], "client_secret": "wrong"},
                    timeout=10,
                ),
            )
        )
        out.append((f"{path} no credentials", requests.post(u + path, data=data, timeout=10)))
        out.append(
            (
                f"{path} malformed basic",
                requests.post(u + path, data=data, headers={"Authorization": "Basic !!!"}, timeout=10),
            )
        )
    out.append(("userinfo no token", requests.get(u + "/userinfo", timeout=10)))
    out.append(
        (
            "userinfo bad token",
            requests.get(u + "/userinfo", headers={"Authorization": "Bearer x"}, timeout=10),
        )
    )
    out.append(("admin no token", requests.post(u + "/admin/terminations", json={}, timeout=10)))
    out.append(("register no token", requests.post(u + "/register", json={}, timeout=10)))
    out.append(
        (
            "register non-ASCII token",
            requests.post(
                u + "/register", json={}, headers={"Authorization": "Bearer \xe9t\xe9"}, timeout=10
            ),
        )
    )
    return out


def test_every_401_carries_www_authenticate(idp: IdP) -> None:
    """RFC 6749 §5.2 (client authentication), RFC 6750 §3 (bearer), RFC 9110 §15.5.2 (any 401)."""
    missing = []
    for name, resp in _401s(idp):
        if resp.status_code == 401 and not resp.headers.get("WWW-Authenticate"):
            missing.append(name)
    assert missing == []
    assert any(r.status_code == 401 for _, r in _401s(idp))


def test_non_ascii_initial_access_token_is_401_not_500(idp: IdP) -> None:
    """compare_digest refuses non-ASCII str: the registration gate compares bytes (no 500)."""
    for value in ("Bearer \xe9", "Bearer " + REGISTRATION_TOKEN + "\xe9", "\xff\xfe"):
        resp = requests.post(
            f"{idp.url}/register",
            json={"redirect_uris": [RP["redirect_uris"][0]]},
            headers={"Authorization": value},
            timeout=10,
        )
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_token", resp.text


def _responses(idp: IdP) -> list[tuple[str, requests.Response]]:
    u = idp.url
    get = lambda path, **kw: requests.get(u + path, allow_redirects=False, timeout=10, **kw)  # noqa: E731
    post = lambda path, **kw: requests.post(u + path, allow_redirects=False, timeout=10, **kw)  # noqa: E731
    return [
        ("discovery", get("/.well-known/openid-configuration")),
        ("oauth metadata", get("/.well-known/oauth-authorization-server")),
        ("jwks", get("/jwks")),
        ("login page", get("/login")),
        ("account redirect", get("/account")),
        ("authorize error page", get("/authorize")),
        (
            "authorize unknown client",
            get("/authorize", params={"client_id": "nobody", "response_type": "code"}),
        ),
        (
            "authorize login redirect",
            get(
                "/authorize",
                params={
                    "client_id": RP["client_id"],
                    "response_type": "code",
                    "scope": "openid",
                    "redirect_uri": RP["redirect_uris"][0],
                    "code_challenge": "a" * 43,
                    "code_challenge_method": "S256",
                },
            ),
        ),
        ("token error", post("/token", data={"grant_type": "password"}, auth=AUTH)),
        ("token wrong content type", post("/token", json={})),
        ("revoke ok", post("/revoke", data={"token": "x"}, auth=AUTH)),
        ("introspect ok", post("/introspect", data={"token": "x"}, auth=AUTH)),
        ("userinfo 401", get("/userinfo")),
        ("register 401", post("/register", json={})),
        ("end_session page", get("/end_session")),
        ("end_session error page", get("/end_session", params={"id_token_hint": "x"})),
        ("frontchannel report error", post("/logout/frontchannel-report", json={})),
        ("admin 401", get("/admin/terminations/x")),
        ("405", requests.delete(u + "/token", timeout=10)),
        ("405 page", requests.delete(u + "/login", timeout=10)),
        ("413 page", post("/login", data={"x": "y" * 70000})),
    ]


def test_every_op_response_has_nosniff(idp: IdP) -> None:
    """X-Content-Type-Options: nosniff on every OP response, success or error."""
    missing = [name for name, r in _responses(idp) if r.headers.get("X-Content-Type-Options") != "nosniff"]
    assert missing == []


def test_every_page_and_error_refuses_framing(idp: IdP) -> None:
    """X-Frame-Options: DENY on every page (login, consent, logout) and every error page."""
    missing = [name for name, r in _responses(idp) if r.headers.get("X-Frame-Options") != "DENY"]
    assert missing == []


def test_login_and_end_session_confirm_refuse_non_ascii_csrf_tokens(idp: IdP) -> None:
    """compare_digest on a non-ASCII CSRF token: 400, never a 500 (tokens.same_secret)."""
    browser = Browser(idp.url)
    page = browser.http.get(f"{idp.url}/login", timeout=10)
    assert re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    for token in ("\xe9", "\u2603" * 40, "\x00"):
        resp = browser.http.post(
            f"{idp.url}/login",
            data={"csrf_token": token, "username": "alice", "password": "x"},
            allow_redirects=False,
            timeout=10,
        )
        assert resp.status_code == 400, resp.status_code
        resp = browser.http.post(
            f"{idp.url}/end_session",
            data={"client_id": RP["client_id"], "confirm": "yes", "csrf_token": token},
            allow_redirects=False,
            timeout=10,
        )
        assert resp.status_code in (200, 400), resp.status_code
        assert "Sign out?" in resp.text or "error" in resp.text.lower()
