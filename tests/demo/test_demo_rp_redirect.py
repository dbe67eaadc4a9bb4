"""Issue 12 item 9 (demo RP part): after sign-in the demo RP redirects only to a path on
itself, never to ``//evil``, ``/\\evil`` or an absolute URL (no open redirect). Driven over
real HTTP against the demo IdP; redirects are followed by hand and only on loopback."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from oidc_logout.demo.rp_app import RPConfig, create_rp_app
from tests.support.idp import PASSWORD, start_idp
from tests.support.servers import LiveServer

HOSTILE = [
    "//evil.example/x",
    "/\\evil.example/x",
    "/\\/evil.example",
    "https://evil.example/",
    "http:evil.example",
    "/%2F/evil.example",
    "/\t/evil.example",
    "//127.0.0.2/x",
    "\\\\evil",
    "evil.example",
    "javascript:alert(1)",
    "/ok?next=//evil",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = LiveServer()
    cfg = RPConfig(
        name="RP",
        client_id="demo-rp-redirect",
        client_secret="secret-" + "z" * 16,
        base_url=server.url,
        issuer="(set below)",
    )
    idp = start_idp(f"sqlite:///{tmp_path_factory.mktemp('idp') / 'op.db'}", clients=[cfg.client_metadata()])
    cfg = RPConfig(**{**cfg.__dict__, "issuer": idp.url})
    server.app = create_rp_app(cfg)
    server.start()
    yield idp, cfg
    server.stop()
    idp.stop()


def _sign_in_and_get_final_location(idp_url: str, rp_url: str, nxt: str) -> str:
    """Run the code flow by hand; return the Location the RP's /callback answers with."""
    browser = requests.Session()
    resp = browser.get(f"{rp_url}/login", params={"next": nxt}, allow_redirects=False, timeout=10)
    for _ in range(10):
        assert resp.status_code in (200, 302, 303), resp.text[:300]
        if resp.status_code == 200 and "csrf_token" in resp.text:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', resp.text).group(1)  # type: ignore[union-attr]
            nx = re.search(r'name="next" value="([^"]+)"', resp.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
            resp = browser.post(
                f"{idp_url}/login",
                data={"csrf_token": csrf, "username": "alice", "password": PASSWORD, "next": nx},
                allow_redirects=False,
                timeout=10,
            )
            continue
        location = urljoin(resp.url, resp.headers["Location"])
        if location.startswith(f"{rp_url}/callback"):
            done = browser.get(location, allow_redirects=False, timeout=10)
            assert done.status_code == 302, done.text[:300]
            return str(done.headers["Location"])
        assert urlsplit(location).hostname == "127.0.0.1", location  # only loopback is followed
        resp = browser.get(location, allow_redirects=False, timeout=10)
    raise AssertionError("the sign-in did not reach the RP callback")


@pytest.mark.parametrize("nxt", ["//evil.example/x", "/\\evil.example/x", "https://evil.example/"])
def test_demo_rp_never_redirects_off_site_after_sign_in(demo, nxt: str) -> None:  # type: ignore[no-untyped-def]
    idp, cfg = demo
    location = _sign_in_and_get_final_location(idp.url, cfg.base_url, nxt)
    resolved = urljoin(cfg.base_url + "/callback", location)
    assert urlsplit(resolved).netloc == urlsplit(cfg.base_url).netloc, location
    assert location == "/"


def test_demo_rp_keeps_a_local_next_path(demo) -> None:  # type: ignore[no-untyped-def]
    idp, cfg = demo
    assert _sign_in_and_get_final_location(idp.url, cfg.base_url, "/protected") == "/protected"


@pytest.mark.parametrize("nxt", HOSTILE)
def test_safe_next_refuses_every_off_site_form(nxt: str) -> None:
    from oidc_logout.demo.rp_app import safe_next

    safe = safe_next(nxt)
    # How a browser resolves it against the RP: it must stay on the RP's own origin.
    resolved = urljoin("http://127.0.0.1:5001/callback", safe.replace("\\", "/"))
    assert urlsplit(resolved).netloc == "127.0.0.1:5001"
    if nxt not in ("/ok?next=//evil", "/%2F/evil.example"):  # those two are local paths
        assert safe == "/"
