"""`oidc-logout serve`: the bundled OP under gunicorn as a real process, several workers, one
delivery dispatcher."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from jwcrypto import jwk, jwt

from oidc_logout.testing import CaptureServer, Reply
from tests.support.idp import PASSWORD, Browser, authorize, client_meta

from .conftest import ROOT, cli_env, free_port, one_error, run_cli


def _wait_until_serving(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if requests.get(f"{url}/.well-known/openid-configuration", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not answer in time")


def test_serve_runs_the_op_under_gunicorn_with_one_dispatcher(database_url: str, tmp_path: Path) -> None:
    """Discovery, sign-in, RP-initiated logout and the back-channel logout token, across two
    gunicorn workers (shared CSRF key); exactly one worker runs the dispatcher."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with CaptureServer() as rp:
        meta = client_meta(
            "rp-served",
            backchannel_logout_uri=rp.url("/bc", Reply(200)),
            backchannel_logout_session_required=True,
        )
        clients = tmp_path / "clients.json"
        clients.write_text(json.dumps([meta]))
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "oidc_logout.cli", "serve", "--bind", f"127.0.0.1:{port}"),
                *("--workers", "2", "--threads", "2", "--clients", str(clients), "--demo-password", PASSWORD),
            ],
            cwd=ROOT,
            env=cli_env(
                OIDC_LOGOUT_ISSUER=issuer,
                OIDC_LOGOUT_DATABASE_URL=database_url,
                OIDC_LOGOUT_DEV_MODE="true",
                OIDC_LOGOUT_EXPIRY_SWEEP_INTERVAL="0",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_until_serving(issuer, proc)
            discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).json()
            assert discovery["issuer"] == issuer and discovery["backchannel_logout_supported"] is True
            browser = Browser(issuer)
            for _ in range(3):  # several requests: both workers take part
                assert browser.login().status_code in (302, 303)
            tokens = authorize(browser, meta)
            resp = browser.http.get(
                discovery["end_session_endpoint"],
                params={
                    "id_token_hint": tokens["id_token"],
                    "post_logout_redirect_uri": meta["post_logout_redirect_uris"][0],
                },
                allow_redirects=False,
                timeout=15,
            )
            assert resp.status_code in (200, 302), resp.text
            assert rp.wait_for(1, timeout=30, path="/bc")
            keys = jwk.JWKSet.from_json(requests.get(discovery["jwks_uri"], timeout=5).text)
            raw = rp.hits("/bc")[0].form["logout_token"][0]
            claims = json.loads(jwt.JWT(jwt=raw, key=keys, algs=["RS256", "ES256"], check_claims={}).claims)
            assert claims["iss"] == issuer and claims["aud"] == "rp-served"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stderr.count("Booting worker") >= 2, stderr
    assert stderr.count("runs the delivery dispatcher") == 1, stderr


def test_serve_refuses_a_development_issuer_outside_dev_mode(tmp_path: Path) -> None:
    out = run_cli(
        "serve",
        "--bind",
        f"127.0.0.1:{free_port()}",
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'op.db'}",
        timeout=60,
    )
    assert out.returncode == 2
    assert "OIDC_LOGOUT_ISSUER" in one_error(out)
    assert not (tmp_path / "op.db").exists()


def test_serve_refuses_an_http_issuer_outside_dev_mode(tmp_path: Path) -> None:
    out = run_cli(
        "serve",
        OIDC_LOGOUT_ISSUER="http://op.example.com",
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'op.db'}",
        timeout=60,
    )
    assert out.returncode == 2 and "not https" in one_error(out)


HOST_APP = """
import os
from flask import Flask
from oidc_logout.demo.users import DemoUsers
from oidc_logout.op import OIDCLogout

app = Flask("hostapp")
app.secret_key = "host-secret-key-for-the-test"
app.config.update({k: v for k, v in os.environ.items() if k.startswith("OIDC_LOGOUT_")})
OIDCLogout(app, users=DemoUsers("pw"), start_background=False)


@app.get("/host-page")
def host_page():
    return "the host's own page"
"""


def test_serve_runs_a_host_app_with_one_dispatcher(tmp_path: Path) -> None:
    """`serve --app module:app`: the host's Flask app with OIDCLogout under gunicorn, its own
    routes and ours, and exactly one worker running the dispatcher."""
    (tmp_path / "hostapp.py").write_text(HOST_APP)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oidc_logout.cli",
            "serve",
            "--app",
            "hostapp:app",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        env=cli_env(
            OIDC_LOGOUT_ISSUER=issuer,
            OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'host.db'}",
            OIDC_LOGOUT_DEV_MODE="true",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_serving(issuer, proc)
        assert requests.get(f"{issuer}/host-page", timeout=5).text == "the host's own page"
        assert requests.get(f"{issuer}/jwks", timeout=5).json()["keys"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stderr.count("runs the delivery dispatcher") == 1, stderr


def test_serve_with_auto_migrate_off_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    from oidc_logout.storage.schema import make_engine

    url = f"sqlite:///{tmp_path / 'op.db'}"
    make_engine(url).connect().close()
    out = run_cli(
        "serve",
        "--bind",
        f"127.0.0.1:{free_port()}",
        OIDC_LOGOUT_DATABASE_URL=url,
        OIDC_LOGOUT_DEV_MODE="true",
        OIDC_LOGOUT_AUTO_MIGRATE="false",
        timeout=60,
    )
    assert out.returncode == 6 and "oidc-logout migrate" in out.stderr
    assert "schema" in one_error(out)
