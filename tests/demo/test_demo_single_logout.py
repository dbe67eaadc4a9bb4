"""The demo's promise over real HTTP: sign in to three RPs (built on oidc_logout.rp), sign out
once, and every RP's server-side session is gone."""

from __future__ import annotations

import re

import pytest
import requests

from oidc_logout.demo.rp_app import RPConfig, create_rp_app
from tests.support.idp import PASSWORD, start_idp
from tests.support.servers import LiveServer


@pytest.fixture
def demo(sqlite_url):
    rp_servers = [LiveServer() for _ in range(3)]
    configs = [
        RPConfig(
            name=f"RP {i}",
            client_id=f"demo-rp-{i}",
            client_secret=f"secret-{i}-" + "z" * 16,
            base_url=s.url,
            issuer="(set below)",
            backchannel=True,
        )
        for i, s in enumerate(rp_servers)
    ]
    idp = start_idp(sqlite_url, clients=[c.client_metadata() for c in configs])
    configs = [RPConfig(**{**c.__dict__, "issuer": idp.url}) for c in configs]
    for s, c in zip(rp_servers, configs):
        s.app = create_rp_app(c)
        s.start()
    yield idp, configs
    for s in rp_servers:
        s.stop()
    idp.stop()


def _sign_in(browser: requests.Session, rp_url: str, idp_url: str) -> None:
    page = browser.get(f"{rp_url}/login", timeout=10)
    if page.url.startswith(idp_url) and "csrf_token" in page.text:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        nxt = re.search(r'name="next" value="([^"]+)"', page.text).group(1).replace("&amp;", "&")
        page = browser.post(
            f"{idp_url}/login",
            data={"csrf_token": csrf, "username": "alice", "password": PASSWORD, "next": nxt},
            timeout=10,
        )
    assert page.url.rstrip("/") == rp_url and "Signed in as" in page.text, page.text[:300]


def test_one_sign_out_ends_the_sessions_of_all_three_rps(demo):
    """Back-Channel Logout end to end: RP sessions end on the RP servers, not only in a cookie."""
    idp, configs = demo
    browser = requests.Session()
    for c in configs:
        _sign_in(browser, c.base_url, idp.url)
    stolen = dict(browser.cookies.items())  # a copy of every cookie, kept aside
    for c in configs:
        assert "Secret page" in browser.get(f"{c.base_url}/protected", timeout=10).text
    out = browser.get(f"{configs[0].base_url}/logout", timeout=20)
    assert out.url.startswith(f"{configs[0].base_url}/logged-out") and "state" in out.url
    for c in configs:
        again = browser.get(f"{c.base_url}/protected", allow_redirects=False, timeout=10)
        assert again.status_code == 302 and again.headers["Location"].startswith("/login")
        replay = requests.get(f"{c.base_url}/protected", cookies=stolen, allow_redirects=False, timeout=10)
        assert replay.status_code == 302, "the old session cookie must not work after logout"
