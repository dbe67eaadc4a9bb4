"""The revocation fast path's own PostgreSQL connections under `oidc-logout serve`: a stopping
worker closes them (gunicorn's worker_exit hook, oidc_logout/gunicorn_hooks.py; granian's
wrapped worker, oidc_logout/granian_server.py), so no server process is left behind when the
workers stop. Here, not in tests/op: it needs the servers (the serve extra), which
`make test-min` does not install."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from oidc_logout.storage.base import utcnow
from tests.cli.conftest import SERVERS, Served, free_port
from tests.op.test_revocation_fastpath_connections import (  # noqa: F401 (fixtures)
    RP,
    _backends,
    _wait_gone,
    admin,
    pg_url,
)
from tests.support.idp import introspect, revoke


@pytest.mark.postgres
@pytest.mark.parametrize("server", SERVERS)
def test_no_connection_left_after_the_workers_exit(server, pg_url, admin, tmp_path):  # noqa: F811
    """``oidc-logout serve`` (2 workers x 4 threads): revocations open the fast path's
    connections in the workers; after SIGTERM (each stopping worker closes them) no server
    process is left on the database, and no revocation fell back on an error."""
    from sqlalchemy.orm import Session

    from oidc_logout.storage.models import Grant, Token
    from oidc_logout.storage.schema import make_engine
    from oidc_logout.tokens import new_id, new_token, token_hash

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([RP]))
    served = Served(
        *("--server", server, "--bind", f"127.0.0.1:{port}"),
        *("--workers", "2", "--threads", "4", "--clients", str(clients)),
        OIDC_LOGOUT_ISSUER=url,
        OIDC_LOGOUT_DATABASE_URL=pg_url,
        OIDC_LOGOUT_DEV_MODE="true",
        OIDC_LOGOUT_EXPIRY_SWEEP_INTERVAL="0",
    )
    engine = make_engine(pg_url)
    try:
        served.wait_until_serving(url)
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
        code = served.stop()
    output = served.output
    assert code == 0, output
    assert "revocation fast path failed" not in output, output
    assert "Exception during worker exit" not in output and "Traceback" not in output, output
    assert not _wait_gone(admin, pg_url, _backends(admin, pg_url))
