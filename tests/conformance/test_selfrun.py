"""Self-run: both profiles against the project's own demo OP (tests/support/idp.py,
SQLite, dev_mode) and its own RP library (oidc_logout.rp.flask.RPLogout: once with a test
hook creating sessions, once as the demo's sample RP that users sign in to through the
runner's OP, no hook), through the command-line entry point. Everything must pass (the op profile once with the logged-out page
parsed, once loaded in Chromium); reports must never contain a token or secret."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from oidc_logout_conformance.catalog import op_checks, rp_checks
from tests.support.idp import PASSWORD, IdP, start_idp
from tests.support.servers import LiveServer

from .fixtures.project_rp import CLIENT_ID, create_project_rp
from .helpers import by_status, run

CHROMIUM = "/usr/bin/chromium"
COMPACT_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _assert_redacted(report_dir: Path) -> None:
    for name in ("report.json", "report.html"):
        text = (report_dir / name).read_text()
        assert not COMPACT_JWT.search(text), f"{name} contains a compact JWT"
    html = (report_dir / "report.html").read_text()
    assert "<script" not in html and "http-equiv" not in html and "<link" not in html


@pytest.fixture(scope="module")
def demo_op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    # The runner registers its clients (RFC 7591): registration is opened explicitly (closed by
    # default), and its clients are untrusted, so its browser approves the consent page.
    idp = start_idp(f"sqlite:///{tmp_path_factory.mktemp('op') / 'op.db'}", registration_open=True)
    yield idp
    idp.stop()


@pytest.mark.parametrize(
    "browser",
    [
        pytest.param(False, id="parsed"),
        pytest.param(True, id="chromium", marks=pytest.mark.browser),
    ],
)
def test_op_profile_against_project_demo_op(tmp_path: Path, demo_op: IdP, browser: bool) -> None:
    extra = ["--browser", CHROMIUM] if browser else []
    rc, report = run(
        [
            "op",
            "--issuer",
            demo_op.url,
            "--username",
            "alice",
            "--password",
            PASSWORD,
            "--wait",
            "8",
            "--settle",
            "0.3",
            *extra,
        ],
        tmp_path / "report",
    )
    failing = {c["id"]: c["reason"] for c in report["checks"] if c["status"] != "pass"}
    expected = set(op_checks()) if browser else set(op_checks()) - {"FCL-4-browser"}
    assert {k for k in failing if k in expected} == set(), failing
    assert by_status(report, "pass") == expected
    if not browser:
        assert failing == {"FCL-4-browser": "no --browser given: the logged-out page was parsed, not loaded"}
    else:
        loaded = next(c for c in report["checks"] if c["id"] == "FCL-4-browser")["evidence"]["requests_seen"]
        assert {r["Sec-Fetch-Dest"] for r in loaded if r["path"].endswith("/frontchannel")} == {"iframe"}
    assert rc == 0
    _assert_redacted(tmp_path / "report")
    # The client secrets and refresh tokens the runner handled are nowhere in the report.
    text = (tmp_path / "report" / "report.json").read_text()
    assert '"client_secret": "[REDACTED]"' in text


def test_rp_profile_against_project_rp(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rp = LiveServer(create_project_rp(f"http://127.0.0.1:{port}")).start()
    try:
        rc, report = run(
            [
                "rp",
                "--backchannel-uri",
                rp.url + "/oidc/backchannel-logout",
                "--client-id",
                CLIENT_ID,
                "--frontchannel-uri",
                rp.url + "/oidc/frontchannel-logout",
                "--issuer-port",
                str(port),
                "--session-adapter",
                "http",
                "--session-login-url",
                rp.url + "/login?sub={sub}&sid={sid}",
                "--session-check-url",
                rp.url + "/protected",
            ],
            tmp_path / "report",
        )
    finally:
        rp.stop()
    failing = {c["id"]: c["reason"] for c in report["checks"] if c["status"] != "pass"}
    assert failing == {}, failing
    assert by_status(report, "pass") == set(rp_checks())
    assert rc == 0
    _assert_redacted(tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    valid = next(c for c in data["checks"] if c["id"] == "RP-BCL-2.8-valid")
    assert valid["evidence"]["sent"]["logout_token"]["signature"] == "[REDACTED]"
    assert valid["evidence"]["sent"]["logout_token"]["claims"]["aud"] == CLIENT_ID


def test_rp_profile_against_demo_sample_rp_signing_in(tmp_path: Path) -> None:
    """No test hook: the demo's sample RP (code flow with PKCE, client_secret_basic) signs
    every session in through the runner's OP, and the login session adapter watches
    /protected. Every check passes, and the sessions came from real sign-ins."""
    from oidc_logout.demo.rp_app import RPConfig, create_rp_app

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = LiveServer()
    cfg = RPConfig(
        "sample", "sample-rp", "sample-secret", server.url, f"http://127.0.0.1:{port}", frontchannel=True
    )
    server.app = create_rp_app(cfg)
    server.start()
    try:
        rc, report = run(
            [
                "rp",
                "--backchannel-uri",
                server.url + "/oidc/backchannel-logout",
                "--frontchannel-uri",
                server.url + "/oidc/frontchannel-logout",
                "--client-id",
                cfg.client_id,
                "--client-secret",
                cfg.client_secret,
                "--redirect-uri",
                server.url + "/callback",
                "--issuer-port",
                str(port),
                "--session-adapter",
                "login",
                "--session-check-url",
                server.url + "/protected",
            ],
            tmp_path / "report",
        )
    finally:
        server.stop()
    failing = {c["id"]: c["reason"] for c in report["checks"] if c["status"] != "pass"}
    assert failing == {}, failing
    assert rc == 0 and report["result"] == "pass"
    sign_in = report["meta"]["sign_in"]
    # one sign-in (authorize + token + ID token) per RP session the checks used
    assert sign_in["token_requests"] == sign_in["id_tokens_issued"] >= 20
    assert report["meta"]["session_adapter"] == "LoginSessionAdapter"
    _assert_redacted(tmp_path / "report")


def test_non_loopback_target_is_refused(tmp_path: Path) -> None:
    from oidc_logout_conformance.runner import main

    assert (
        main(
            [
                "op",
                "--issuer",
                "https://op.example.com",
                "--username",
                "u",
                "--password",
                "p",
                "--report-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
