"""`oidc-logout terminate` tells the truth: it waits for the deliveries of its own termination
(made by this process with the embedded dispatcher, by the workers otherwise) and its exit code
says how they ended, naming each RP that did not confirm."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from oidc_logout.cli_support import EXIT_DEAD, EXIT_OK, EXIT_TIMEOUT
from oidc_logout.storage.models import Delivery, DeliveryAttempt
from tests.faults.conftest import WorkerProc
from tests.support.idp import Browser, authorize, client_meta
from tests.termination.conftest import Env, make_env

from .conftest import free_port, run_cli


def _cli_env(env: Env, **extra: str) -> dict[str, str]:
    return {
        "OIDC_LOGOUT_ISSUER": env.idp.url,
        "OIDC_LOGOUT_DATABASE_URL": env.idp.settings.database_url,
        "OIDC_LOGOUT_DEV_MODE": "true",
        "OIDC_LOGOUT_DELIVERY_BACKOFF_BASE": "0.05",
        "OIDC_LOGOUT_DELIVERY_BACKOFF_CAP": "0.1",
        "OIDC_LOGOUT_DELIVERY_CONNECT_TIMEOUT": "1",
        **extra,
    }


@pytest.fixture
def env_with_a_stopped_rp(database_url: str) -> Iterator[Env]:
    """rp-a answers; rp-down's back-channel URI is a loopback port nobody listens on. The OP
    runs no dispatcher of its own: only the CLI (or a worker) delivers."""
    down = client_meta(
        "rp-down",
        port=20010,
        backchannel_logout_uri=f"http://127.0.0.1:{free_port()}/logout",
        backchannel_logout_session_required=True,
    )
    env = make_env(database_url, extra_clients=[down], embedded_dispatcher=False)
    env.metas["rp-down"] = down
    browser = Browser(env.idp.url)
    browser.login()
    for name in ("rp-a", "rp-down"):
        authorize(browser, env.metas[name])
    yield env
    env.idp.stop()
    env.rps.stop()


def test_terminate_against_a_stopped_rp_exits_non_zero_naming_it(env_with_a_stopped_rp: Env) -> None:
    env = env_with_a_stopped_rp
    out = run_cli(
        "terminate",
        "--sub",
        "alice",
        "--reason",
        "offboarding",
        "--wait",
        "20",
        **_cli_env(env, OIDC_LOGOUT_DELIVERY_MAX_ATTEMPTS="2"),
    )
    assert out.returncode == EXIT_DEAD, out.stdout + out.stderr
    named = [line for line in out.stderr.splitlines() if "has not confirmed" in line]
    assert len(named) == 1 and "rp-down" in named[0] and "dead" in named[0], out.stderr
    assert "rp-a" not in out.stderr and "Traceback" not in out.stderr
    assert "1 session(s) ended" in out.stdout and "1 delivered, 1 dead" in out.stdout


def test_terminate_in_worker_mode_never_delivers_itself(env_with_a_stopped_rp: Env) -> None:
    """With the embedded dispatcher off and no worker running, nothing is delivered: the
    command waits, exits with the timed-out code and leaves the rows to the workers."""
    env = env_with_a_stopped_rp
    out = run_cli(
        "terminate",
        "--sub",
        "alice",
        "--reason",
        "r",
        "--wait",
        "1",
        "--json",
        **_cli_env(env, OIDC_LOGOUT_EMBEDDED_DISPATCHER="false"),
    )
    assert out.returncode == EXIT_TIMEOUT, out.stderr
    result = json.loads(out.stdout)["result"]
    assert result["backchannel"] == {"pending": 2} and result["delivered_by"] == "the workers"
    assert "rp-a" in out.stderr and "rp-down" in out.stderr and "oidc-logout show" in out.stderr
    with env.idp.provider.session_factory() as db:
        assert db.scalars(select(DeliveryAttempt)).all() == []
    assert env.rps.hits("/rp-a") == []


@pytest.mark.postgres
def test_terminate_with_workers_waits_for_their_results(pg_databases) -> None:
    url = pg_databases.new()
    env = make_env(url, embedded_dispatcher=False)
    worker = None
    try:
        browser = Browser(env.idp.url)
        browser.login()
        for name in ("rp-a", "rp-b"):
            authorize(browser, env.metas[name])
        worker = WorkerProc(url, cli=True, OIDC_LOGOUT_ISSUER=env.idp.url)
        assert worker.alive(), worker.log_tail()
        out = run_cli(
            "terminate",
            "--sub",
            "alice",
            "--reason",
            "r",
            "--json",
            **_cli_env(env, OIDC_LOGOUT_EMBEDDED_DISPATCHER="false"),
        )
        assert out.returncode == EXIT_OK, out.stderr + worker.log_tail()
        report = json.loads(out.stdout)
        assert report["result"]["backchannel"] == {"delivered": 2}
        assert report["result"]["delivered_by"] == "the workers"
        with env.idp.provider.session_factory() as db:
            ids = db.scalars(select(Delivery.id).where(Delivery.termination_id == report["id"])).all()
            owners = db.scalars(
                select(DeliveryAttempt.worker).where(DeliveryAttempt.delivery_id.in_(ids))
            ).all()
        # Every attempt was made by the worker process, none by the CLI.
        assert len(owners) == 2 and all(f":{worker.pid}:" in str(o) for o in owners), owners
        assert len(env.rps.hits("/rp-a")) == 1 and len(env.rps.hits("/rp-b")) == 1
    finally:
        if worker is not None:
            worker.terminate()
        env.idp.stop()
        env.rps.stop()
        pg_databases.drop(url)


def test_a_300_session_terminate_names_a_broken_rp_once(database_url: str) -> None:
    """300 sessions at an RP that is down: one summary and one line for that RP, not 300."""
    import secrets

    from oidc_logout.clients import load_clients
    from oidc_logout.config import Settings
    from oidc_logout.provider import Provider
    from oidc_logout.storage.base import utcnow
    from oidc_logout.storage.models import OPSession, SessionParticipant

    meta = client_meta(
        "rp-down",
        backchannel_logout_uri=f"http://127.0.0.1:{free_port()}/logout",
        backchannel_logout_session_required=True,
    )
    issuer = "http://127.0.0.1:5999"
    provider = Provider(Settings(database_url=database_url, dev_mode=True, issuer=issuer))
    try:
        provider.setup()
        load_clients(provider, [meta])
        with provider.session_factory.begin() as db:
            for _ in range(300):
                sid = secrets.token_urlsafe(16)
                db.add(OPSession(sid=sid, subject="bob", auth_time=utcnow()))
                db.flush()
                db.add(SessionParticipant(sid=sid, client_id="rp-down"))
    finally:
        provider.engine.dispose()
    out = run_cli(
        "terminate",
        "--sub",
        "bob",
        "--reason",
        "offboarding",
        "--wait",
        "60",
        OIDC_LOGOUT_DATABASE_URL=database_url,
        OIDC_LOGOUT_ISSUER=issuer,
        OIDC_LOGOUT_DEV_MODE="true",
        OIDC_LOGOUT_DELIVERY_MAX_ATTEMPTS="1",
    )
    assert out.returncode == EXIT_DEAD, out.stderr
    assert "300 session(s) ended" in out.stdout and "300 dead" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 2, out.stdout
    assert out.stderr.strip().splitlines() == [
        line
        for line in out.stderr.strip().splitlines()
        if "rp-down" in line and "300 logout(s): dead" in line
    ]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
