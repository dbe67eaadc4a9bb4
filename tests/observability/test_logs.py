"""Structured logs: one line per delivery attempt carrying termination, delivery and client
ids, the attempt number, the outcome and the latency; failed and dead outcomes are WARNINGs
that say so; the JSON format is one object a line; no token or secret is ever logged."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from oidc_logout.config import SettingsError
from oidc_logout.logs import JsonFormatter, configure_logging
from oidc_logout.termination import by_subject
from oidc_logout.testing import Reply
from tests.termination.conftest import admin_token

from .conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("termination_id", "delivery_id", "client_id", "attempt", "outcome", "latency_ms")


def _delivery_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if hasattr(r, "delivery_id")]


def _wait_records(caplog, n: int, timeout: float = 15.0) -> list[logging.LogRecord]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while len(_delivery_records(caplog)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return _delivery_records(caplog)


def test_every_delivery_line_names_its_ids_and_dead_letters_are_warnings_that_say_dead(env_factory, caplog):
    caplog.set_level(logging.INFO)
    env = env_factory(
        replies={"rp-a": [Reply(200)], "rp-b": [Reply(503)] * 5, "rp-c": [Reply(400)]},
        delivery_max_attempts=2,
    )
    sign_in(env, names=("rp-a", "rp-b", "rp-c"))
    out = env.idp.provider.terminate_now(by_subject("alice"), reason="test", initiator="test", wait=5)
    records = _wait_records(caplog, 4)  # a: delivered; b: retry, dead; c: failed
    assert len(records) == 4, [r.getMessage() for r in records]
    by = {(r.client_id, r.attempt): r for r in records}  # type: ignore[attr-defined]
    for r in records:
        for f in FIELDS:
            assert getattr(r, f) is not None, (f, r.getMessage())
        assert r.termination_id == out.termination_id  # type: ignore[attr-defined]
        assert str(r.delivery_id) in r.getMessage() and r.client_id in r.getMessage()  # type: ignore[attr-defined]
    a, b1, b2, c = by[("rp-a", 1)], by[("rp-b", 1)], by[("rp-b", 2)], by[("rp-c", 1)]
    assert (a.levelno, a.outcome) == (logging.INFO, "delivered")  # type: ignore[attr-defined]
    assert (b1.levelno, b1.outcome) == (logging.INFO, "retry")  # type: ignore[attr-defined]
    assert "retry scheduled" in b1.getMessage()
    # The attempt that made the row dead says dead, not retry, at WARNING, with the reason.
    assert (b2.levelno, b2.outcome) == (logging.WARNING, "dead")  # type: ignore[attr-defined]
    assert "dead letter" in b2.getMessage() and "retry scheduled" not in b2.getMessage()
    assert "HTTP 503" in b2.reason  # type: ignore[attr-defined]
    assert (c.levelno, c.outcome) == (logging.WARNING, "failed")  # type: ignore[attr-defined]
    assert "HTTP 400" in c.reason  # type: ignore[attr-defined]
    # JSON: one object a line, every field a key of its own.
    for r in records:
        doc = json.loads(JsonFormatter().format(r))
        assert {f: doc[f] for f in FIELDS} == {f: getattr(r, f) for f in FIELDS}
        assert doc["level"] == r.levelname and doc["logger"] == r.name


def test_json_logs_of_a_whole_session_hold_no_token_or_secret(env_factory, caplog):
    """Login, code exchange, revocation, a logout with deliveries, the admin API and the
    metrics scrape, all formatted as JSON: no token, secret or logout token appears."""
    caplog.set_level(logging.DEBUG)
    env = env_factory(replies={"rp-b": [Reply(503)] * 5}, delivery_max_attempts=1)
    browser, tokens = sign_in(env)
    meta = env.metas["rp-a"]
    requests.post(
        f"{env.idp.url}/revoke",
        data={"token": tokens["rp-a"]["access_token"]},
        auth=(meta["client_id"], meta["client_secret"]),
        timeout=10,
    )
    admin = admin_token(env)
    r = browser.http.get(
        f"{env.idp.url}/end_session",
        params={"id_token_hint": tokens["rp-a"]["id_token"]},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 200
    env.rps.wait_for(1, 5, path="/rp-b")
    _wait_records(caplog, 2)
    requests.get(f"{env.idp.url}/admin/deliveries", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    secrets = [
        v
        for tok in tokens.values()
        for k, v in tok.items()
        if k in ("access_token", "refresh_token", "id_token")
    ]
    secrets += [h.form["logout_token"][0] for h in env.rps.requests]
    secrets += [meta["client_secret"], env.metas["admin"]["client_secret"], admin]
    assert len(secrets) >= 8
    fmt = JsonFormatter()
    text = "\n".join(fmt.format(r) for r in caplog.records if not r.name.startswith("urllib3"))
    assert '"outcome": "dead"' in text
    for s in secrets:
        assert s not in text
        assert s[-20:] not in text


def test_an_unknown_log_format_is_refused_naming_the_setting():
    with pytest.raises(SettingsError, match="OIDC_LOGOUT_LOG_FORMAT='xml'"):
        configure_logging("xml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.postgres
def test_the_worker_command_logs_json_and_serves_health_on_its_port(pg_databases):
    from tests.termination.conftest import make_env

    url = pg_databases.new()
    env = make_env(url, embedded_dispatcher=False)
    port = _free_port()
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OIDC_LOGOUT_DATABASE_URL": url,
        "OIDC_LOGOUT_ISSUER": env.idp.url,
        "OIDC_LOGOUT_DEV_MODE": "true",
        "OIDC_LOGOUT_LOG_FORMAT": "json",
    }
    code = "from oidc_logout.cli import main; raise SystemExit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "worker", "--health-port", str(port)],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code
                if status == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        assert status == 200
        sign_in(env, names=("rp-a",))
        env.idp.provider.terminate_now(by_subject("alice"), reason="test", initiator="test", wait=10)
        env.rps.wait_for(1, 10, path="/rp-a")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        reader.join(5)
        env.idp.stop()
        env.rps.stop()
        pg_databases.drop(url)
    assert rc == 0
    docs = [json.loads(line) for line in lines if line.strip()]  # every line is one JSON object
    delivered = [d for d in docs if d.get("outcome") == "delivered"]
    assert len(delivered) == 1, docs
    assert set(FIELDS) <= set(delivered[0])
    assert delivered[0]["client_id"] == "rp-a" and delivered[0]["attempt"] == 1
