"""The revocation fast path's own PostgreSQL connections under `oidc-logout serve`: gunicorn's
worker_exit hook closes them (oidc_logout/gunicorn_hooks.py), so no server process is left
behind when the workers stop. Here, not in tests/op: it needs gunicorn (the serve extra),
which `make test-min` does not install."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from oidc_logout.storage.base import utcnow
from tests.op.test_revocation_fastpath_connections import (  # noqa: F401 (fixtures)
    RP,
    _backends,
    _wait_gone,
    admin,
    pg_url,
)
from tests.support.idp import introspect, revoke


@pytest.mark.postgres
def test_no_connection_left_after_gunicorn_workers_exit(pg_url, admin, tmp_path):  # noqa: F811
    """``oidc-logout serve`` (2 gthread workers x 4 threads): revocations open the fast path's
    connections in the workers; after SIGTERM (gunicorn's ``worker_exit`` hook closes them)
    no server process is left on the database, and no revocation fell back on an error."""
    from sqlalchemy.orm import Session

    from oidc_logout.storage.models import Grant, Token
    from oidc_logout.storage.schema import make_engine
    from oidc_logout.tokens import new_id, new_token, token_hash
    from tests.cli.conftest import ROOT, cli_env, free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([RP]))
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "oidc_logout.cli", "serve", "--bind", f"127.0.0.1:{port}"),
            *("--workers", "2", "--threads", "4", "--clients", str(clients)),
        ],
        cwd=ROOT,
        env=cli_env(
            OIDC_LOGOUT_ISSUER=url,
            OIDC_LOGOUT_DATABASE_URL=pg_url,
            OIDC_LOGOUT_DEV_MODE="true",
            OIDC_LOGOUT_EXPIRY_SWEEP_INTERVAL="0",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    engine = make_engine(pg_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if requests.get(f"{url}/.well-known/openid-configuration", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "serve did not answer in time"
            time.sleep(0.2)
        values = [new_token() for _ in range(64)]
        with Session(engine) as db, db.begin():
            for value in values:
                grant = Grant(
                    id=new_id(16), client_id=RP["client_id"], grant_type="client_credentials", scope=""
                )
                db.add(grant)
                db.flush()
                db.add(
                    Token(
                        token_hash=token_hash(value),
                        kind="access_token",
                        grant_id=grant.id,
                        client_id=RP["client_id"],
                        scope="",
                        expires_at=utcnow() + dt.timedelta(hours=1),
                    )
                )
        engine.dispose()
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda t: revoke(url, RP, t).status_code, values)) == {200}
        assert all(introspect(url, RP, t) == {"active": False} for t in values[::8])
        assert _backends(admin, pg_url, fast_only=True)
    finally:
        engine.dispose()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "revocation fast path failed" not in stderr, stderr
    assert "Exception during worker exit" not in stderr and "Traceback" not in stderr, stderr
    assert not _wait_gone(admin, pg_url, _backends(admin, pg_url))
