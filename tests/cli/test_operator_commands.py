"""The operator CLI: deliveries, retry, rotate-secret, demo --help (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import select

from oidc_logout.storage.models import Delivery
from oidc_logout.termination import by_subject
from tests.delivery.conftest import Reply
from tests.support.idp import Browser, authorize, refresh
from tests.termination.conftest import make_env


def _cli(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "oidc_logout.cli",
            *args,
            "--json",
            "--database-url",
            env.idp.settings.database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "OIDC_LOGOUT_ISSUER": env.idp.url,
            "OIDC_LOGOUT_DEV_MODE": "true",
            "OIDC_LOGOUT_EXPIRY_SWEEP_INTERVAL": "0",
            "PATH": "/usr/bin:/bin",
        },
    )


def test_deliveries_lists_failed_rows_and_retry_delivers_them(database_url):
    """`oidc-logout deliveries` shows a failed notification; `retry --now` delivers it."""
    env = make_env(database_url, replies={"rp-b": [Reply(400), Reply(200)]})
    try:
        browser = Browser(env.idp.url)
        browser.login()
        for name in ("rp-a", "rp-b"):
            authorize(browser, env.metas[name])
        env.idp.provider.terminate_now(by_subject("alice"), reason="test", initiator="test", wait=5)
        out = _cli(env, "deliveries", "--state", "failed")
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert [d["client_id"] for d in listed["deliveries"]] == ["rp-b"]
        assert listed["summary"].get("failed") == 1
        out = _cli(env, "retry", "--now")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["requeued"] == 1
        with env.idp.provider.session_factory() as db:
            row = db.scalar(select(Delivery).where(Delivery.client_id == "rp-b"))
            assert row.state == "delivered" and row.attempts == 2
        assert len(env.rps.hits("/rp-b")) == 2
    finally:
        env.idp.stop()
        env.rps.stop()


def test_rotate_secret_cli_ends_grants_of_the_old_secret(database_url):
    """`oidc-logout rotate-secret --client X` prints the new secret and ends old-credential grants."""
    env = make_env(database_url)
    try:
        browser = Browser(env.idp.url)
        browser.login()
        tokens = authorize(browser, env.metas["rp-a"], scope="openid offline_access")
        out = _cli(env, "rotate-secret", "--client", "rp-a", "--reason", "leaked in a log")
        assert out.returncode == 0, out.stderr
        new_secret = json.loads(out.stdout)["client_secret"]
        meta = dict(env.metas["rp-a"], client_secret=new_secret)
        assert refresh(env.idp.url, meta, tokens["refresh_token"]).status_code == 400
    finally:
        env.idp.stop()
        env.rps.stop()


def test_demo_help_documents_every_option():
    """`oidc-logout demo --help` names the options the README promises."""
    out = subprocess.run(
        [sys.executable, "-m", "oidc_logout.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    for option in ("--host", "--port", "--database-url", "--demo-password", "--clients", "--dev"):
        assert option in out.stdout


def test_rotate_key_publishes_first_then_signs_and_keeps_the_old_key_published(database_url):
    """`oidc-logout rotate-key`: the new key is in the JWKS at once but signs only after the
    rollover period (RPs with a cached JWKS keep verifying); `--immediately` switches now.
    The old key stays published either way."""
    import base64

    import requests

    def id_token_kid() -> str:
        browser = Browser(env.idp.url)
        browser.login()
        tokens = authorize(browser, env.metas["rp-a"])
        return str(json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[0] + "=="))["kid"])

    env = make_env(database_url)
    try:
        old = env.idp.provider.keyring.signing_key("RS256").kid
        out = _cli(env, "rotate-key", "--alg", "RS256")
        assert out.returncode == 0, out.stderr
        published = json.loads(out.stdout)["kid"]
        assert published != old
        env.idp.provider.keyring.refresh()  # running instances do this within the cache TTL
        kids = {k["kid"] for k in requests.get(f"{env.idp.url}/jwks", timeout=5).json()["keys"]}
        assert {old, published} <= kids
        assert id_token_kid() == old  # still in its rollover period
        out = _cli(env, "rotate-key", "--alg", "RS256", "--immediately")
        assert out.returncode == 0, out.stderr
        new = json.loads(out.stdout)["kid"]
        env.idp.provider.keyring.refresh()
        kids = {k["kid"] for k in requests.get(f"{env.idp.url}/jwks", timeout=5).json()["keys"]}
        assert {old, new} <= kids
        assert id_token_kid() == new
    finally:
        env.idp.stop()
        env.rps.stop()


def test_terminate_exits_non_zero_naming_an_rp_that_did_not_confirm(database_url):
    """The termination commits either way (sessions ended, tokens revoked), but an operator
    must learn that an RP did not confirm: exit 1 and one line per such RP."""
    env = make_env(database_url, replies={"rp-b": [Reply(400, body=b'{"error":"invalid_request"}')]})
    try:
        browser = Browser(env.idp.url)
        browser.login()
        for name in ("rp-a", "rp-b"):
            authorize(browser, env.metas[name])
        out = _cli(env, "terminate", "--sub", "alice", "--reason", "offboarding", "--wait", "5")
        assert out.returncode == 1, out.stderr
        assert "rp-b" in out.stderr and "rp-a" not in out.stderr and "Traceback" not in out.stderr
        report = json.loads(out.stdout)
        assert report["sessions_ended"] == 1
    finally:
        env.idp.stop()
        env.rps.stop()


def test_deliveries_shows_every_state_of_both_channels_newest_first(database_url):
    """The proof command: by default every state (delivered included), both channels."""
    env = make_env(database_url)
    try:
        browser = Browser(env.idp.url)
        browser.login()
        authorize(browser, env.metas["rp-a"])
        env.idp.provider.terminate_now(by_subject("alice"), reason="first", initiator="test", wait=5)
        browser.login()
        authorize(browser, env.metas["rp-a"])
        env.idp.provider.terminate_now(by_subject("alice"), reason="second", initiator="test", wait=5)
        out = _cli(env, "deliveries")
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        states = {d["state"] for d in listed["deliveries"]}
        assert "delivered" in states, states
        ids = [d["id"] for d in listed["deliveries"]]
        assert ids == sorted(ids, reverse=True) and len(ids) == 2
        only = json.loads(_cli(env, "deliveries", "--channel", "frontchannel").stdout)
        assert only["deliveries"] == []
    finally:
        env.idp.stop()
        env.rps.stop()
