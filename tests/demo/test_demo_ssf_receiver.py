"""The demo's Shared Signals receiver (oidc_logout/demo/ssf_app.py) over real HTTP: it keeps
serving without a transmitter, and with the OP's SSF transmitter one sign-out at a sample RP
reaches it as a CAEP session-revoked SET that ends its server-side session."""

from __future__ import annotations

import logging
import re
import time

import pytest
import requests

from oidc_logout.demo.rp_app import RPConfig, create_rp_app
from oidc_logout.demo.ssf_app import create_ssf_rp_app, ssf_client_metadata, ssf_rp_config
from oidc_logout.testing import CaptureServer, Reply
from tests.support.idp import PASSWORD, start_idp
from tests.support.servers import LiveServer


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


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_without_a_transmitter_the_receiver_logs_one_line_and_keeps_serving(caplog):
    """No /.well-known/ssf-configuration at the issuer: one warning, the page says so, sign-in
    pages still answer."""
    with CaptureServer(default=Reply(404)) as op:
        server = LiveServer()
        app, demo = create_ssf_rp_app(ssf_rp_config(op.base_url, server.url))
        server.app = app
        server.start()
        try:
            with caplog.at_level(logging.INFO, logger="oidc_logout.demo.ssf_app"):
                assert demo.start_stream() is False
            lines = [r for r in caplog.records if r.name == "oidc_logout.demo.ssf_app"]
            assert len(lines) == 1 and lines[0].levelno == logging.WARNING
            home = requests.get(server.url, timeout=5)
            assert (
                home.status_code == 200 and "ssf-problem" in home.text and "No SSF transmitter" in home.text
            )
            assert requests.get(f"{server.url}/ssf", timeout=5).status_code == 200
            assert op.count("/.well-known/ssf-configuration") == 1
        finally:
            server.stop()


def test_one_sign_out_reaches_the_ssf_receiver_and_ends_its_session(database_url):
    """Issue 16 "Done when": a sign-out at a back-channel RP also ends the session of the RP that
    only receives Shared Signals (CAEP session-revoked pushed through the OP's transmitter)."""
    rp_server, ssf_server = LiveServer(), LiveServer()
    rp_cfg = RPConfig(
        name="Notes",
        client_id="demo-notes",
        client_secret="demo-notes-secret-" + "z" * 16,
        base_url=rp_server.url,
        issuer="(set below)",
        backchannel=True,
    )
    ssf_cfg = ssf_rp_config("(set below)", ssf_server.url)
    idp = start_idp(database_url, clients=[rp_cfg.client_metadata(), ssf_client_metadata(ssf_cfg)])
    try:
        if requests.get(f"{idp.url}/.well-known/ssf-configuration", timeout=5).status_code != 200:
            pytest.skip(
                "the OP on this branch has no SSF transmitter yet (oidc_logout/ssf, merged separately)"
            )
        rp_cfg = RPConfig(**{**rp_cfg.__dict__, "issuer": idp.url})
        ssf_cfg = RPConfig(**{**ssf_cfg.__dict__, "issuer": idp.url})
        rp_server.app = create_rp_app(rp_cfg)
        ssf_app, demo = create_ssf_rp_app(ssf_cfg)
        ssf_server.app = ssf_app
        rp_server.start()
        ssf_server.start()
        assert demo.start_stream(), demo.problem
        assert _wait(lambda: demo.receiver.stream.verified_at is not None, 20), (
            "no verification event arrived"
        )

        browser = requests.Session()
        _sign_in(browser, rp_cfg.base_url, idp.url)
        _sign_in(browser, ssf_cfg.base_url, idp.url)
        assert "Secret page" in browser.get(f"{ssf_cfg.base_url}/protected", timeout=10).text

        out = browser.get(f"{rp_cfg.base_url}/logout", timeout=20)
        assert out.url.startswith(f"{rp_cfg.base_url}/logged-out")

        def ended() -> bool:
            return any(
                r.event_type.endswith("/session-revoked") and r.outcome == "processed" and r.ended
                for r in demo.receiver.history
            )

        assert _wait(ended, 30), demo.receiver.history
        again = browser.get(f"{ssf_cfg.base_url}/protected", allow_redirects=False, timeout=10)
        assert again.status_code == 302 and again.headers["Location"].startswith("/login")
        page = browser.get(ssf_cfg.base_url, timeout=10).text
        assert "session-revoked" in page and "ssf-ended" in page
    finally:
        rp_server.stop()
        ssf_server.stop()
        idp.stop()
