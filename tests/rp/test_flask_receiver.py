"""Flask RP over real HTTP: back-channel and front-channel logout end server-side sessions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from oidc_logout.rp import MemorySessionIndex, MemorySessionStore

from .conftest import FakeOP, ServerThread
from .rp_app import create_app
from .tokens import logout_token

BC = "/oidc/backchannel-logout"
FC = "/oidc/frontchannel-logout"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class RP:
    def __init__(self, op: FakeOP, **rp_options: Any) -> None:
        self.store = MemorySessionStore()
        self.index = MemorySessionIndex()
        rp_options.setdefault("frontchannel", True)
        self.app, self.ext = create_app(op.issuer, index=self.index, store=self.store, **rp_options)
        self.server = ServerThread(self.app)
        self.url = self.server.url

    def browser(self, sub: str = "alice", sid: str | None = "op-sid-1") -> requests.Session:
        b = requests.Session()
        params = {"sub": sub} | ({"sid": sid} if sid else {})
        assert b.get(self.url + "/callback", params=params, timeout=5).status_code == 200
        assert b.get(self.url + "/protected", allow_redirects=False, timeout=5).status_code == 200
        return b

    def logged_in(self, browser: requests.Session) -> bool:
        r = browser.get(self.url + "/protected", allow_redirects=False, timeout=5)
        return r.status_code == 200

    def post_token(self, token: str) -> requests.Response:
        return requests.post(self.url + BC, data={"logout_token": token}, timeout=5, allow_redirects=False)


@pytest.fixture
def rp(op: FakeOP) -> Iterator[RP]:
    server = RP(op)
    yield server
    server.server.stop()


def test_backchannel_logout_deletes_the_server_side_session_so_protected_page_redirects_to_login(
    op: FakeOP, rp: RP
) -> None:
    browser = rp.browser(sid="op-sid-1")
    cookie = browser.cookies.get("session")
    assert rp.store.load(cookie) is not None
    resp = rp.post_token(logout_token(op.issuer, sid="op-sid-1", now=__import__("time").time()))
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert rp.store.load(cookie) is None
    r = browser.get(rp.url + "/protected", allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")


def test_the_old_cookie_is_useless_after_backchannel_logout(op: FakeOP, rp: RP) -> None:
    browser = rp.browser()
    stolen = browser.cookies.get("session")
    assert (
        rp.post_token(logout_token(op.issuer, sid="op-sid-1", now=__import__("time").time())).status_code
        == 200
    )
    r = requests.get(rp.url + "/protected", cookies={"session": stolen}, allow_redirects=False, timeout=5)
    assert r.status_code == 302


def test_sid_token_ends_only_that_session_and_sub_token_ends_all_of_the_users_sessions(
    op: FakeOP, rp: RP
) -> None:
    import time

    laptop, phone, other = (
        rp.browser("alice", "sid-a"),
        rp.browser("alice", "sid-b"),
        rp.browser("bob", "sid-c"),
    )
    assert (
        rp.post_token(logout_token(op.issuer, sub="alice", sid="sid-a", now=time.time())).status_code == 200
    )
    assert (rp.logged_in(laptop), rp.logged_in(phone), rp.logged_in(other)) == (False, True, True)
    assert rp.post_token(logout_token(op.issuer, sub="alice", sid=None, now=time.time())).status_code == 200
    assert (rp.logged_in(phone), rp.logged_in(other)) == (False, True)


def test_logout_for_an_already_ended_session_still_answers_200(op: FakeOP, rp: RP) -> None:
    import time

    resp = rp.post_token(logout_token(op.issuer, sid="never-existed", now=time.time()))
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"


def test_invalid_token_gets_400_json_with_reason_and_without_echoing_the_token(op: FakeOP, rp: RP) -> None:
    import time

    browser = rp.browser()
    token = logout_token(op.issuer, nonce="abc", now=time.time())
    resp = rp.post_token(token)
    assert resp.status_code == 400
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"].startswith("nonce_present")
    assert token not in resp.text and token.split(".")[1] not in resp.text
    assert rp.logged_in(browser)


def test_replayed_token_gets_400_replayed(op: FakeOP, rp: RP) -> None:
    import time

    token = logout_token(op.issuer, now=time.time())
    assert rp.post_token(token).status_code == 200
    resp = rp.post_token(token)
    assert resp.status_code == 400 and resp.json()["error_description"].startswith("replayed")


def test_backchannel_requires_a_form_post(op: FakeOP, rp: RP) -> None:
    import time

    token = logout_token(op.issuer, now=time.time())
    resp = requests.post(rp.url + BC, json={"logout_token": token}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error_description"].startswith("bad_content_type")
    resp = requests.post(rp.url + BC, data={"other": "x"}, timeout=5)
    assert resp.json()["error_description"].startswith("token_missing")
    assert requests.get(rp.url + BC, timeout=5).status_code == 405


def test_frontchannel_logout_with_iss_and_sid_ends_the_matching_session(op: FakeOP, rp: RP) -> None:
    browser, other = rp.browser("alice", "sid-f"), rp.browser("bob", "sid-g")
    # The OP's iframe request: third-party context, the RP cookie may not be sent.
    r = requests.get(rp.url + FC, params={"iss": op.issuer, "sid": "sid-f"}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "no-store" in r.headers["Cache-Control"] and r.headers["Pragma"] == "no-cache"
    assert "X-Frame-Options" not in r.headers
    # Only the OP may frame the RP's logout page.
    assert f"frame-ancestors {op.issuer.rstrip('/')}" in r.headers["Content-Security-Policy"]
    assert not rp.logged_in(browser) and rp.logged_in(other)


def test_frontchannel_logout_from_another_issuer_ends_nothing(op: FakeOP, rp: RP) -> None:
    browser = rp.browser("alice", "sid-h")
    r = requests.get(rp.url + FC, params={"iss": "https://evil.example", "sid": "sid-h"}, timeout=5)
    assert r.status_code == 400
    assert rp.logged_in(browser)


def test_frontchannel_logout_without_parameters_ends_the_browsers_own_session_when_not_session_required(
    op: FakeOP,
) -> None:
    """Front-Channel Logout §2 with frontchannel_logout_session_required=false: the cookie decides."""
    rp = RP(op, frontchannel_session_required=False)
    try:
        _own_session_ends(rp)
    finally:
        rp.server.stop()


def _own_session_ends(rp: RP) -> None:
    browser, other = rp.browser("alice", "sid-i"), rp.browser("alice", "sid-j")
    cookie = browser.cookies.get("session")
    r = browser.get(rp.url + FC, timeout=5)
    assert r.status_code == 200 and "no-store" in r.headers["Cache-Control"]
    assert rp.store.load(cookie) is None
    assert (
        requests.get(
            rp.url + "/protected", cookies={"session": cookie}, allow_redirects=False, timeout=5
        ).status_code
        == 302
    )
    assert rp.logged_in(other)


def test_local_logout_deletes_the_session_and_its_index_entry(rp: RP) -> None:
    browser = rp.browser("alice", "sid-k")
    cookie = browser.cookies.get("session")
    browser.get(rp.url + "/logout", allow_redirects=False, timeout=5)
    assert rp.store.load(cookie) is None
    assert rp.index.local_sessions_for(rp.ext.validator.issuer, sid="sid-k") == set()  # type: ignore[union-attr]


def test_login_rotates_the_session_id(rp: RP) -> None:
    browser = requests.Session()
    browser.get(rp.url + "/protected", allow_redirects=False, timeout=5)
    browser.get(rp.url + "/callback", params={"sub": "a", "sid": "s"}, timeout=5)
    first = browser.cookies.get("session")
    browser.get(rp.url + "/callback", params={"sub": "a", "sid": "s2"}, timeout=5)
    second = browser.cookies.get("session")
    assert first != second and rp.store.load(first) is None and rp.store.load(second) is not None


def test_extension_state_lives_in_app_extensions(rp: RP) -> None:
    assert "oidc_logout_rp" in rp.app.extensions
