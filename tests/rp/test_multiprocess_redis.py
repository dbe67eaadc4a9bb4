"""Two RP processes sharing Redis: a replay is caught across processes, and a logout
received by one replica ends the session served by the other."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import FakeOP
from .tokens import logout_token

ROOT = Path(__file__).resolve().parents[2]
BC = "/oidc/backchannel-logout"


def spawn(issuer: str, prefix: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.rp.rp_app", "--issuer", issuer, "--redis-prefix", prefix],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    # Bounded wait for the child's "PORT n" line: a child that never starts must fail the
    # test, not hang the suite.
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("PORT "):
        proc.kill()
        pytest.fail(f"RP process did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


@pytest.fixture
def two_rps(op: FakeOP, redis_client: object, redis_prefix: str) -> Iterator[tuple[str, str]]:
    procs = [spawn(op.issuer, redis_prefix) for _ in range(2)]
    try:
        yield procs[0][1], procs[1][1]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.redis
def test_token_replayed_to_a_second_rp_process_sharing_redis_is_rejected(
    op: FakeOP, two_rps: tuple[str, str]
) -> None:
    a, b = two_rps
    token = logout_token(op.issuer, now=time.time())
    first = requests.post(a + BC, data={"logout_token": token}, timeout=10)
    second = requests.post(b + BC, data={"logout_token": token}, timeout=10)
    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json() == {
        "error": "invalid_request",
        "error_description": second.json()["error_description"],
    }
    assert second.json()["error_description"].startswith("replayed")


@pytest.mark.redis
def test_logout_received_by_one_replica_ends_the_session_on_the_other(
    op: FakeOP, two_rps: tuple[str, str]
) -> None:
    a, b = two_rps
    browser = requests.Session()
    browser.get(a + "/callback", params={"sub": "alice", "sid": "sid-mp"}, timeout=10)
    # Same Redis session store: the cookie from replica A works on replica B.
    cookie = browser.cookies.get("session")
    assert (
        requests.get(
            b + "/protected", cookies={"session": cookie}, allow_redirects=False, timeout=10
        ).status_code
        == 200
    )
    resp = requests.post(
        b + BC, data={"logout_token": logout_token(op.issuer, sid="sid-mp", now=time.time())}, timeout=10
    )
    assert resp.status_code == 200
    r = requests.get(a + "/protected", cookies={"session": cookie}, allow_redirects=False, timeout=10)
    assert r.status_code == 302
