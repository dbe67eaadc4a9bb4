"""The login form and the OP session cookie: a session ended server-side is refused whatever
the browser's cookie says (Core 1.0 §3.1.2.3, Back-Channel Logout §2.7)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select, update

from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import OPSession
from oidc_logout.termination import by_sid
from oidc_logout.tokens import token_hash
from tests.support.idp import PASSWORD, Browser, IdP, client_meta, pkce_pair, start_idp

RP = client_meta("login-a")


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    """One OP per module and database; every test uses its own browser (cookie jar)."""
    server = start_idp(module_database_url, clients=[RP])
    yield server
    server.stop()


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "input":
            a = dict(attrs)
            self.inputs[a.get("name") or ""] = a
        elif tag == "form":
            self.forms.append(dict(attrs))


def _authorize(browser: Browser) -> requests.Response:
    _, challenge = pkce_pair()
    return browser.http.get(
        f"{browser.idp_url}/authorize",
        params={
            "response_type": "code",
            "client_id": RP["client_id"],
            "redirect_uri": RP["redirect_uris"][0],
            "scope": "openid",
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )


def _sid(idp: IdP, browser: Browser) -> str:
    cookie = browser.http.cookies.get(idp.settings.session_cookie_name)
    with idp.provider.session_factory() as db:
        return db.scalar(select(OPSession.sid).where(OPSession.cookie_hash == token_hash(cookie)))


def _assert_sent_to_login(resp: requests.Response) -> None:
    assert resp.status_code in (302, 303), resp.text[:300]
    location = resp.headers["Location"]
    assert urlsplit(location).path == "/login"
    assert "code=" not in location


def test_login_form_has_autocomplete_fields_and_csrf_token(idp):
    """WCAG 1.3.5 / HTML autofill: username and current-password fields, plus a CSRF token (synchronizer)."""
    resp = requests.get(f"{idp.url}/login", timeout=10)
    assert resp.status_code == 200
    parser = _Inputs()
    parser.feed(resp.text)
    assert parser.inputs["username"]["autocomplete"] == "username"
    assert parser.inputs["password"]["autocomplete"] == "current-password"
    assert parser.inputs["password"]["type"] == "password"
    assert parser.inputs["csrf_token"]["type"] == "hidden"
    assert len(parser.inputs["csrf_token"]["value"] or "") >= 16
    assert parser.forms[0]["method"] == "post"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


def test_login_without_csrf_token_is_refused(idp):
    """OWASP CSRF / RFC 6749 §10.12: a login POST without the form's CSRF token starts no session."""
    http = requests.Session()
    http.get(f"{idp.url}/login", timeout=10)
    resp = http.post(
        f"{idp.url}/login",
        data={"username": "alice", "password": PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 400
    assert idp.settings.session_cookie_name not in http.cookies


def test_login_with_wrong_csrf_token_is_refused(idp):
    """OWASP CSRF: a token that is not this browser's is refused (login CSRF)."""
    attacker = requests.Session()
    page = attacker.get(f"{idp.url}/login", timeout=10).text
    attacker_token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    victim = requests.Session()
    victim.get(f"{idp.url}/login", timeout=10)
    for token in (attacker_token, "forged", ""):
        resp = victim.post(
            f"{idp.url}/login",
            data={"csrf_token": token, "username": "alice", "password": PASSWORD},
            allow_redirects=False,
            timeout=10,
        )
        assert resp.status_code == 400
    assert idp.settings.session_cookie_name not in victim.cookies


def test_wrong_password_is_refused_with_401(idp):
    """Core 1.0 §3.1.2.3: the End-User must be authenticated; a wrong password starts no session."""
    browser = Browser(idp.url)
    resp = browser.login(password="wrong")
    assert resp.status_code == 401
    assert idp.settings.session_cookie_name not in browser.http.cookies


def test_session_cookie_is_httponly_and_samesite_lax(idp):
    """RFC 6265 §4.1.2.6 / RFC 6265bis SameSite: the OP session cookie is HttpOnly and SameSite=Lax."""
    browser = Browser(idp.url)
    resp = browser.login()
    assert resp.status_code == 303
    header = next(
        v
        for k, v in resp.raw.headers.items()
        if k.lower() == "set-cookie" and v.startswith(idp.settings.session_cookie_name + "=")
    )
    attrs = [a.strip().lower() for a in header.split(";")]
    assert "httponly" in attrs
    assert "samesite=lax" in attrs
    assert "path=/" in attrs
    # The cookie is an opaque value, not the sid shown to RPs.
    value = header.split(";")[0].split("=", 1)[1]
    assert value != _sid(idp, browser) and len(value) >= 32


def test_logged_in_browser_gets_a_code(idp):
    """RFC 6749 §4.1.2: with a live OP session /authorize redirects to the client with a code."""
    browser = Browser(idp.url)
    browser.login()
    resp = _authorize(browser)
    assert resp.status_code == 302
    assert "code" in parse_qs(urlsplit(resp.headers["Location"]).query)


def test_session_ended_in_the_database_is_refused_at_authorize(idp):
    """Core 1.0 §3.1.2.3: an OP session ended server-side means re-authentication, whatever the cookie says."""
    browser = Browser(idp.url)
    browser.login()
    with idp.provider.session_factory.begin() as db:
        db.execute(update(OPSession).where(OPSession.sid == _sid(idp, browser)).values(ended_at=utcnow()))
    _assert_sent_to_login(_authorize(browser))
    account = browser.http.get(f"{idp.url}/account", allow_redirects=False, timeout=10)
    assert account.status_code == 302 and urlsplit(account.headers["Location"]).path == "/login"


def test_session_terminated_by_the_provider_is_refused_at_authorize(idp):
    """Back-Channel Logout §2.7: after terminate_now(by_sid) the old cookie no longer authenticates."""
    browser = Browser(idp.url)
    browser.login()
    sid = _sid(idp, browser)
    idp.provider.terminate_now(by_sid(sid), reason="admin ended it", initiator="test")
    _assert_sent_to_login(_authorize(browser))
    with idp.provider.session_factory() as db:
        row = db.get(OPSession, sid)
        assert row.ended_at is not None and row.end_reason == "admin ended it"


def test_forged_cookie_is_refused_at_authorize(idp):
    """Core 1.0 §3.1.2.3: a cookie value the OP never issued (e.g. the sid) authenticates nobody."""
    browser = Browser(idp.url)
    browser.login()
    sid = _sid(idp, browser)
    forged = Browser(idp.url)
    forged.http.cookies.set(idp.settings.session_cookie_name, sid)
    _assert_sent_to_login(_authorize(forged))


def test_logging_in_again_after_server_side_end_starts_a_new_session(idp):
    """Core 1.0 §3.1.2.3: after re-authentication a new OP session (new sid) is created."""
    browser = Browser(idp.url)
    browser.login()
    old = _sid(idp, browser)
    idp.provider.terminate_now(by_sid(old), reason="test", initiator="test")
    assert browser.login().status_code == 303
    new = _sid(idp, browser)
    assert new and new != old
    assert _authorize(browser).status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_login_next_parameter_cannot_redirect_off_site(idp, target):
    """RFC 9700 §4.11 (open redirectors): the post-login target stays on the OP."""
    http = requests.Session()
    page = http.get(f"{idp.url}/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = http.post(
        f"{idp.url}/login",
        data={"csrf_token": csrf, "username": "alice", "password": PASSWORD, "next": target},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 303
    location = resp.headers["Location"]
    assert urlsplit(location).netloc in ("", urlsplit(idp.url).netloc)
    assert "evil" not in location


def test_prompt_login_reauthenticates_once_then_issues_a_code(idp):
    """Core 1.0 §3.1.2.1 prompt=login: a signed-in End-User is sent to the login page; after
    signing in again the request completes (no endless return to the login page)."""
    browser = Browser(idp.url)
    browser.login()
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": RP["client_id"],
        "scope": "openid",
        "redirect_uri": RP["redirect_uris"][0],
        "state": "st",
        "prompt": "login",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    first = browser.http.get(f"{idp.url}/authorize", params=params, allow_redirects=False, timeout=10)
    _assert_sent_to_login(first)
    next_url = parse_qs(urlsplit(first.headers["Location"]).query)["next"][0]
    assert "prompt=login" not in next_url and next_url.startswith("/authorize?")
    page = browser.http.get(f"{idp.url}/login", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    signed_in = browser.http.post(
        f"{idp.url}/login",
        data={"csrf_token": csrf, "username": "alice", "password": PASSWORD, "next": next_url},
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.status_code == 303
    done = browser.http.get(idp.url + signed_in.headers["Location"], allow_redirects=False, timeout=10)
    assert done.status_code == 302
    assert "code" in parse_qs(urlsplit(done.headers["Location"]).query)
