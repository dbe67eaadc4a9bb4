"""`oidc-logout serve`: the bundled OP (or a host app) under each production server as a real
process, several workers, one delivery dispatcher."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
from pathlib import Path

import pytest
import requests
from jwcrypto import jwk, jwt

from oidc_logout.testing import CaptureServer, Reply
from tests.support.idp import PASSWORD, Browser, authorize, client_meta

from .conftest import SERVERS, Served, free_port, one_error, run_cli, workers_started


def _serve_bundled_op(
    server: str, port: int, clients: list[dict], database_url: str, tmp_path: Path
) -> Served:  # type: ignore[type-arg]
    """``oidc-logout serve`` of the bundled OP in dev mode on ``port``: 2 workers x 2 threads,
    ``clients`` loaded, no expiry sweep."""
    clients_file = tmp_path / "clients.json"
    clients_file.write_text(json.dumps(clients))
    return Served(
        *("--server", server, "--bind", f"127.0.0.1:{port}"),
        *("--workers", "2", "--threads", "2", "--clients", str(clients_file), "--demo-password", PASSWORD),
        OIDC_LOGOUT_ISSUER=f"http://127.0.0.1:{port}",
        OIDC_LOGOUT_DATABASE_URL=database_url,
        OIDC_LOGOUT_DEV_MODE="true",
        OIDC_LOGOUT_EXPIRY_SWEEP_INTERVAL="0",
    )


@pytest.mark.parametrize("server", SERVERS)
def test_serve_runs_the_op_with_one_dispatcher(server: str, database_url: str, tmp_path: Path) -> None:
    """Discovery, sign-in, RP-initiated logout and the back-channel logout token, across two
    workers (shared CSRF key); exactly one worker runs the dispatcher."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with CaptureServer() as rp:
        meta = client_meta(
            "rp-served",
            backchannel_logout_uri=rp.url("/bc", Reply(200)),
            backchannel_logout_session_required=True,
        )
        served = _serve_bundled_op(server, port, [meta], database_url, tmp_path)
        try:
            served.wait_until_serving(issuer)
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
            code = served.stop()
    assert code == 0, served.output
    assert workers_started(server, served.output) >= 2, served.output
    assert served.output.count("runs the delivery dispatcher") == 1, served.output
    assert "Traceback" not in served.output, served.output


@pytest.mark.parametrize("server", SERVERS)
def test_serve_hands_the_dispatcher_to_another_worker_when_its_worker_dies(
    server: str, tmp_path: Path
) -> None:
    """The worker running the dispatcher is killed (SIGKILL: no clean stop): another worker
    takes the election over, and a logout after that is still delivered."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with CaptureServer() as rp:
        meta = client_meta("rp-served", backchannel_logout_uri=rp.url("/bc", Reply(200)))
        served = _serve_bundled_op(server, port, [meta], f"sqlite:///{tmp_path / 'op.db'}", tmp_path)
        try:
            served.wait_until_serving(issuer)
            (first,) = served.wait_for("runs the delivery dispatcher")
            victim = int(re.search(r"process (\d+) runs", first).group(1))  # type: ignore[union-attr]
            os.kill(victim, signal.SIGKILL)
            second = served.wait_for("runs the delivery dispatcher", count=2)[1]
            assert f"process {victim} " not in second
            served.wait_until_serving(issuer)
            browser = Browser(issuer)
            assert browser.login().status_code in (302, 303)
            tokens = authorize(browser, meta)
            end_session = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).json()[
                "end_session_endpoint"
            ]
            resp = browser.http.get(
                end_session, params={"id_token_hint": tokens["id_token"]}, allow_redirects=False, timeout=15
            )
            assert resp.status_code in (200, 302), resp.text
            assert rp.wait_for(1, timeout=30, path="/bc")
        finally:
            code = served.stop()
    assert code == 0, served.output


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


@pytest.mark.parametrize("server", SERVERS)
def test_serve_runs_a_host_app_with_one_dispatcher(server: str, tmp_path: Path) -> None:
    """`serve --app module:app`: the host's Flask app with OIDCLogout, its own routes and ours,
    and exactly one worker running the dispatcher."""
    (tmp_path / "hostapp.py").write_text(HOST_APP)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    served = Served(
        *("--server", server, "--app", "hostapp:app", "--bind", f"127.0.0.1:{port}"),
        cwd=tmp_path,
        OIDC_LOGOUT_ISSUER=issuer,
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'host.db'}",
        OIDC_LOGOUT_DEV_MODE="true",
    )
    try:
        served.wait_until_serving(issuer)
        assert requests.get(f"{issuer}/host-page", timeout=5).text == "the host's own page"
        assert requests.get(f"{issuer}/jwks", timeout=5).json()["keys"]
        served.wait_for("runs the delivery dispatcher")
    finally:
        code = served.stop()
    assert code == 0, served.output
    assert served.output.count("runs the delivery dispatcher") == 1, served.output


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


@pytest.mark.parametrize(
    ("app", "said"),
    [
        ("nosuchmodule:app", "no module named 'nosuchmodule'"),
        ("nosuchpackage.wsgi:create_app()", "no module named 'nosuchpackage.wsgi'"),
        ("hostapp", "expected MODULE:NAME or MODULE:FACTORY()"),
        ("hostapp:app(1)", "is not a name"),
        ("hostapp:create_app()", "defines no 'create_app'"),
    ],
)
def test_serve_refuses_an_app_it_cannot_find_before_any_worker_starts(
    app: str, said: str, tmp_path: Path
) -> None:
    """A usage error (exit 2, one line), not a worker that fails to boot: the database is not
    touched and no server starts."""
    (tmp_path / "hostapp.py").write_text(HOST_APP)
    db = tmp_path / "op.db"
    out = run_cli(
        "serve",
        "--app",
        app,
        "--bind",
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{db}",
        OIDC_LOGOUT_DEV_MODE="true",
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert said in one_error(out)
    assert not db.exists()


SLOW_HOST_APP = (
    HOST_APP
    + """
import time

time.sleep(4)  # a worker still loading the app when the stop signal comes
"""
)


@pytest.mark.parametrize("server", SERVERS)
def test_serve_stops_cleanly_while_workers_are_still_loading_the_app(server: str, tmp_path: Path) -> None:
    """SIGTERM while every worker is still importing the app: each stops (none is killed for
    refusing to stop, none starts the dispatcher on the way out) and serve exits 0."""
    (tmp_path / "slowapp.py").write_text(SLOW_HOST_APP)
    served = Served(
        *(
            "--server",
            server,
            "--app",
            "slowapp:app",
            "--bind",
            f"127.0.0.1:{free_port()}",
            "--timeout",
            "20",
        ),
        cwd=tmp_path,
        OIDC_LOGOUT_ISSUER="http://127.0.0.1:9",
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'host.db'}",
        OIDC_LOGOUT_DEV_MODE="true",
    )
    served.wait_for("Booting worker" if server == "gunicorn" else "Spawning worker", count=2)
    code = served.stop()
    assert code == 0, served.output
    assert "refused to gracefully stop" not in served.output, served.output
    assert "runs the delivery dispatcher" not in served.output, served.output
    assert "Traceback" not in served.output, served.output


@pytest.mark.parametrize("server", SERVERS)
def test_every_worker_delivers_the_logouts_it_answers_without_the_claim_loop(
    server: str, tmp_path: Path
) -> None:
    """The test holds the election lock, so no worker runs the claim loop (the background
    dispatcher): logouts answered by either worker still reach their RP, from the worker that
    answered (its own burst), with the response waiting for the delivery as usual."""
    from oidc_logout.gunicorn_hooks import lock_path

    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    database_url = f"sqlite:///{tmp_path / 'op.db'}"
    held = os.open(lock_path(database_url), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with CaptureServer() as rp:
            meta = client_meta("rp-served", backchannel_logout_uri=rp.url("/bc", Reply(200)))
            served = _serve_bundled_op(server, port, [meta], database_url, tmp_path)
            try:
                served.wait_until_serving(issuer)
                end_session = f"{issuer}/end_session"
                for n in range(1, 5):
                    browser = Browser(issuer)  # a new connection each time: either worker answers
                    assert browser.login().status_code in (302, 303)
                    tokens = authorize(browser, meta)
                    resp = browser.http.get(
                        end_session,
                        params={"id_token_hint": tokens["id_token"]},
                        allow_redirects=False,
                        timeout=15,
                    )
                    assert resp.status_code in (200, 302), resp.text
                    assert rp.wait_for(n, timeout=30, path="/bc"), served.output
                    ready = requests.get(f"{issuer}/readyz", timeout=15)  # whichever worker answers
                    assert ready.status_code == 200, ready.text
            finally:
                code = served.stop()
    finally:
        os.close(held)
    assert code == 0, served.output
    assert "runs the delivery dispatcher" not in served.output, served.output
