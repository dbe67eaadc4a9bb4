"""Who gets into the operator console (the Chromium walk-through is tests/browser/test_console.py):
only an active admin-scoped token, never a plain user's token; a disabled console is a 404."""

from __future__ import annotations

import requests

from tests.termination.conftest import admin_token

from .conftest import sign_in


def test_the_console_sends_a_browser_without_an_admin_token_to_its_login_form(env_factory):
    env = env_factory()
    url = env.idp.url
    _browser, tokens = sign_in(env, names=("rp-a",))
    user_token = tokens["rp-a"]["access_token"]
    for cookie in (None, "garbage", user_token):
        headers = {"Cookie": f"oidc_logout_console={cookie}"} if cookie else {}
        r = requests.get(f"{url}/console", headers=headers, allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"].endswith("/console/login"), cookie
    ok = requests.get(
        f"{url}/console", headers={"Cookie": f"oidc_logout_console={admin_token(env)}"}, timeout=10
    )
    assert ok.status_code == 200 and "Recent terminations" in ok.text
    assert ok.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in ok.headers["Content-Security-Policy"]


def test_a_user_token_cannot_sign_in_to_the_console(env_factory):
    env = env_factory()
    url = env.idp.url
    _browser, tokens = sign_in(env, names=("rp-a",))
    http = requests.Session()
    page = http.get(f"{url}/console/login", timeout=10).text
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = http.post(
        f"{url}/console/login",
        data={"csrf_token": csrf, "token": tokens["rp-a"]["access_token"]},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Form ")  # never a Basic dialog
    assert "oidc_logout_console" not in r.headers.get("Set-Cookie", "")
    no_csrf = http.post(
        f"{url}/console/login", data={"token": admin_token(env)}, allow_redirects=False, timeout=10
    )
    assert no_csrf.status_code == 400
    assert "oidc_logout_console" not in no_csrf.headers.get("Set-Cookie", "")


def test_a_disabled_console_is_not_served(env_factory):
    env = env_factory(console_enabled=False)
    for path in ("/console", "/console/login"):
        assert requests.get(f"{env.idp.url}{path}", allow_redirects=False, timeout=10).status_code == 404
