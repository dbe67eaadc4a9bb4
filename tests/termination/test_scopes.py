"""Every scope of terminate(): session, subject, client kill switch, grant, credential rotation,
expiry; offline_access rules (Back-Channel Logout §2.7); one transaction; idempotence."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys

import pytest
import requests
from sqlalchemy import func, select

from oidc_logout.storage.models import Delivery, Grant, OPSession, Termination
from oidc_logout.termination import by_client, by_sid, by_subject, terminate
from tests.support.idp import Browser, authorize, introspect, refresh

from .conftest import admin_token


def _session(env, user="alice", names=("rp-a", "rp-b"), scope="openid profile"):
    browser = Browser(env.idp.url)
    browser.login(user)
    return browser, {n: authorize(browser, env.metas[n], scope=scope) for n in names}


def _sid_of(env, tokens, name="rp-a"):
    return introspect(env.idp.url, env.metas[name], tokens[name]["access_token"])["sid"]


def _wait_hits(env, path, n, timeout=5.0):
    env.rps.wait_for(n, timeout, path=path)
    return len(env.rps.hits(path))


def test_terminating_a_subject_ends_all_their_sessions_and_notifies_each_rp(env):
    """Scope subject: both of alice's sessions end, each RP hears once per session; bob stays."""
    _, t1 = _session(env)
    _, t2 = _session(env)
    _, tb = _session(env, user="bob")
    out = env.idp.provider.terminate_now(
        by_subject("alice"), reason="compromised account", initiator="test", wait=5
    )
    assert out.settled
    assert _wait_hits(env, "/rp-a", 2) == 2 and _wait_hits(env, "/rp-b", 2) == 2
    for t in (t1, t2):
        assert introspect(env.idp.url, env.metas["rp-a"], t["rp-a"]["access_token"]) == {"active": False}
    assert introspect(env.idp.url, env.metas["rp-a"], tb["rp-a"]["access_token"])["active"] is True


def test_offline_access_refresh_token_survives_a_user_logout(env):
    """§2.7: offline_access refresh tokens normally SHOULD NOT be revoked at logout."""
    _, t = _session(env, scope="openid offline_access")
    sid = _sid_of(env, t)
    env.idp.provider.terminate_now(by_sid(sid), reason="user logout", initiator="test", wait=0)
    assert introspect(env.idp.url, env.metas["rp-a"], t["rp-a"]["access_token"]) == {"active": False}
    resp = refresh(env.idp.url, env.metas["rp-a"], t["rp-a"]["refresh_token"])
    assert resp.status_code == 200, resp.text
    new = resp.json()
    info = introspect(env.idp.url, env.metas["rp-a"], new["access_token"])
    assert info["active"] is True and "sid" not in info  # detached from the ended session


def test_offline_access_refresh_token_is_revoked_when_the_caller_asks(env):
    """include_offline=True revokes offline_access refresh tokens too."""
    _, t = _session(env, scope="openid offline_access")
    env.idp.provider.terminate_now(
        by_subject("alice"), reason="offboarding", initiator="test", include_offline=True, wait=0
    )
    assert refresh(env.idp.url, env.metas["rp-a"], t["rp-a"]["refresh_token"]).status_code == 400


def test_refresh_token_without_offline_access_dies_with_its_session(env):
    """§2.7: refresh tokens issued without offline_access SHOULD be revoked."""
    _, t = _session(env)
    env.idp.provider.terminate_now(by_sid(_sid_of(env, t)), reason="logout", initiator="test", wait=0)
    assert (
        refresh(env.idp.url, env.metas["rp-a"], t["rp-a"]["refresh_token"]).json()["error"] == "invalid_grant"
    )


def test_client_kill_switch_revokes_every_token_of_the_client_and_its_participation(env):
    """Scope client: offline and client_credentials tokens die; the client's RP is told; others live."""
    _, t = _session(env, scope="openid offline_access")
    admin = env.metas["admin"]
    cc = requests.post(
        f"{env.idp.url}/token",
        data={"grant_type": "client_credentials"},
        auth=(admin["client_id"], admin["client_secret"]),
        timeout=5,
    ).json()["access_token"]
    env.idp.provider.terminate_now(by_client("rp-a"), reason="client compromised", initiator="test", wait=5)
    assert refresh(env.idp.url, env.metas["rp-a"], t["rp-a"]["refresh_token"]).status_code == 400
    assert introspect(env.idp.url, env.metas["rp-a"], t["rp-a"]["access_token"]) == {"active": False}
    assert _wait_hits(env, "/rp-a", 1) == 1
    assert env.rps.hits("/rp-b") == []  # the OP session goes on for rp-b
    assert introspect(env.idp.url, env.metas["rp-b"], t["rp-b"]["access_token"])["active"] is True
    env.idp.provider.terminate_now(by_client("admin"), reason="leaked", initiator="test", wait=0)
    r = requests.post(
        f"{env.idp.url}/admin/terminations",
        json={"sub": "bob", "reason": "x"},
        headers={"Authorization": f"Bearer {cc}"},
        timeout=5,
    )
    assert r.status_code == 401


def test_secret_rotation_ends_what_the_previous_secret_issued(env):
    """Rotation with end_previous: old-credential grants die, the new secret works, the old fails."""
    _, t = _session(env, scope="openid offline_access")
    secret, outcome = env.idp.provider.rotate_client_secret(
        "rp-a", end_previous=True, reason="secret leaked", initiator="test"
    )
    assert outcome is not None
    meta = dict(env.metas["rp-a"], client_secret=secret)
    assert refresh(env.idp.url, meta, t["rp-a"]["refresh_token"]).status_code == 400
    assert refresh(env.idp.url, env.metas["rp-a"], t["rp-a"]["refresh_token"]).status_code == 401
    assert _wait_hits(env, "/rp-a", 1) == 1
    assert introspect(env.idp.url, meta, t["rp-a"]["access_token"]) == {"active": False}


def test_expired_sessions_end_through_termination_and_notify_rps(env):
    """Expiry uses the same path: the session ends and its RPs get logout tokens."""
    _, t = _session(env)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    ids = env.idp.provider.expire_sessions(now=later)
    assert len(ids) == 1
    assert _wait_hits(env, "/rp-a", 1) == 1 and _wait_hits(env, "/rp-b", 1) == 1
    assert introspect(env.idp.url, env.metas["rp-a"], t["rp-a"]["access_token"]) == {"active": False}
    with env.idp.provider.session_factory() as db:
        assert db.get(Termination, ids[0]).target_kind == "expiry"


def test_terminating_an_ended_session_again_returns_the_same_termination(env):
    """Idempotent: a second termination of one session creates nothing new."""
    _, t = _session(env)
    sid = _sid_of(env, t)
    first = env.idp.provider.terminate_now(by_sid(sid), reason="a", initiator="test", wait=0)
    second = env.idp.provider.terminate_now(by_sid(sid), reason="b", initiator="test", wait=0)
    assert first.termination_id == second.termination_id
    with env.idp.provider.session_factory() as db:
        assert db.scalar(select(func.count()).select_from(Termination)) == 1
        assert db.scalar(select(func.count()).select_from(Delivery)) == 2


def test_a_rolled_back_termination_leaves_no_rows(env):
    """One transaction: sessions, revocations and outbox rows commit together or not at all."""
    _, t = _session(env)
    sid = _sid_of(env, t)
    factory = env.idp.provider.session_factory

    def crash_before_commit() -> None:
        with factory.begin() as db:
            terminate(db, by_sid(sid), reason="x", initiator="test")
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Termination)) == 0
        assert db.scalar(select(func.count()).select_from(Delivery)) == 0
        assert db.get(OPSession, sid).ended_at is None
    assert introspect(env.idp.url, env.metas["rp-a"], t["rp-a"]["access_token"])["active"] is True


def test_admin_api_terminates_by_subject_and_reports_every_delivery(env):
    """POST /admin/terminations needs the admin scope; GET shows each RP delivery's state."""
    _session(env)
    token = admin_token(env)
    hdr = {"Authorization": f"Bearer {token}"}
    r = requests.post(
        f"{env.idp.url}/admin/terminations",
        json={"sub": "alice", "reason": "ticket 42", "wait": 5},
        headers=hdr,
        timeout=10,
    )
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["sessions_ended"] == 1 and report["reason"] == "ticket 42"
    assert report["initiator"] == "admin:admin"
    assert {d["client_id"] for d in report["deliveries"]} == {"rp-a", "rp-b"}
    got = requests.get(
        f"{env.idp.url}{r.headers['Location'][len('') :] if r.headers['Location'].startswith('/') else ''}"
        if r.headers["Location"].startswith("/")
        else r.headers["Location"],
        headers=hdr,
        timeout=5,
    ).json()
    assert all(d["state"] == "delivered" for d in got["deliveries"])
    assert all(d["attempt_log"][0]["http_status"] == 200 for d in got["deliveries"])
    assert got["delivery_summary"] == {"delivered": 2} and got["deliveries_total"] == 2
    page = requests.get(
        r.headers["Location"]
        if not r.headers["Location"].startswith("/")
        else env.idp.url + r.headers["Location"],
        params={"limit": 1, "offset": 1},
        headers=hdr,
        timeout=5,
    ).json()
    assert len(page["deliveries"]) == 1 and page["deliveries"][0]["id"] == got["deliveries"][1]["id"]


def test_admin_api_terminates_one_grant_by_grant_id(env):
    """``grant_id`` (turnkey): that grant's tokens die, the other client's in the same session
    live on; an unknown grant is a 404."""
    _, tokens = _session(env)
    with env.idp.provider.session_factory() as db:
        grant_id = db.scalar(select(Grant.id).where(Grant.client_id == "rp-a"))
    hdr = {"Authorization": f"Bearer {admin_token(env)}"}
    url = f"{env.idp.url}/admin/terminations"
    r = requests.post(url, json={"grant_id": grant_id, "reason": "leaked token"}, headers=hdr, timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["target"] == {"kind": "grant", "value": grant_id}
    assert introspect(env.idp.url, env.metas["rp-a"], tokens["rp-a"]["access_token"]) == {"active": False}
    assert introspect(env.idp.url, env.metas["rp-b"], tokens["rp-b"]["access_token"])["active"] is True
    r = requests.post(url, json={"grant_id": "nope", "reason": "r"}, headers=hdr, timeout=10)
    assert r.status_code == 404


def test_admin_api_refuses_bad_requests_and_missing_scope(env):
    """Clear OAuth-style errors; nothing is terminated."""
    token = admin_token(env)
    hdr = {"Authorization": f"Bearer {token}"}
    url = f"{env.idp.url}/admin/terminations"
    assert requests.post(url, json={"sub": "alice"}, timeout=5).status_code == 401
    for body in (
        {"sub": "alice"},
        {"sub": "alice", "sid": "x", "reason": "r"},
        {"reason": "r"},
        {"sub": 5, "reason": "r"},
        [],
        {"sub": "a", "reason": "r", "wait": "soon"},
    ):
        r = requests.post(url, json=body, headers=hdr, timeout=5)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", body
    r = requests.post(url, json={"sid": "nope", "reason": "r"}, headers=hdr, timeout=5)
    assert r.status_code == 404
    with env.idp.provider.session_factory() as db:
        assert db.scalar(select(func.count()).select_from(Termination)) == 0


def test_cli_terminate_by_subject_prints_the_report(env):
    """`oidc-logout terminate --sub alice --reason ...` runs the same termination."""
    _session(env)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "oidc_logout.cli",
            "terminate",
            "--sub",
            "alice",
            "--reason",
            "cli test",
            "--wait",
            "5",
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
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sessions_ended"] == 1 and report["target"] == {"kind": "subject", "value": "alice"}
    assert {d["state"] for d in report["deliveries"]} == {"delivered"}


def test_no_token_appears_in_logs_during_login_and_logout(env, caplog):
    """No token, secret or logout token is ever logged."""
    caplog.set_level(logging.DEBUG)
    browser, t = _session(env)
    r = browser.http.get(
        f"{env.idp.url}/end_session",
        params={"id_token_hint": t["rp-a"]["id_token"]},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 200
    _wait_hits(env, "/rp-b", 1)
    secrets = [
        v for tok in t.values() for k, v in tok.items() if k in ("access_token", "refresh_token", "id_token")
    ]
    secrets += [h.form["logout_token"][0] for h in env.rps.requests]
    secrets += [env.metas["rp-a"]["client_secret"]]
    # urllib3 lines are the test's own HTTP client (the "browser"), not the OP.
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    for s in secrets:
        assert s not in text
        assert s[-20:] not in text
