"""The revocation fast path's own database connections (oidc_logout/rfc7009/fastpath.py,
``_Connections``): kept between requests, on PostgreSQL in autocommit with no pre-ping, so a
revocation is one round trip. These tests pin down that keeping them changes no RFC 7009
behaviour: a connection the server dropped is replaced within the same request (the fast path
still revokes, §2.2 200), revoked tokens are inactive at introspection at once, concurrent
revocations each revoke exactly their token, and no connection outlives the app (closed with
the engine, never reused across ``engine.dispose()``, never touched by a forked child)."""

from __future__ import annotations

import base64
import gc
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from oidc_logout.rfc7009 import fastpath
from tests.conftest import PG_ADMIN_URL
from tests.support.idp import IdP, client_meta, introspect, revoke, start_idp

from .test_revocation_fastpath import _issue_access_token

RP = client_meta("conn-rp")
#: What the fast path sends (psycopg keeps the SQL text in pg_stat_activity.query).
FAST_SQL = "UPDATE oidc_logout_token SET revoked_at=%"


@pytest.fixture
def pg_url(pg_databases: Any) -> Iterator[str]:
    url = pg_databases.new()
    yield url
    pg_databases.drop(url)


@pytest.fixture
def admin() -> Iterator[Any]:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        yield conn
    engine.dispose()


@pytest.fixture
def idp(pg_url: str) -> Iterator[IdP]:
    server = start_idp(pg_url, clients=[RP])
    yield server
    server.stop()


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _backends(admin: Any, url: str, fast_only: bool = False) -> set[int]:
    """Server processes connected to the test database (the admin connection is elsewhere)."""
    sql = "SELECT pid FROM pg_stat_activity WHERE datname = :db"
    if fast_only:
        sql += " AND query LIKE :q"
    rows = admin.execute(text(sql), {"db": _database(url), "q": FAST_SQL}).all()
    return {r[0] for r in rows}


def _wait_gone(admin: Any, url: str, pids: set[int], timeout: float = 10.0) -> set[int]:
    """The pids of ``pids`` still connected after waiting up to ``timeout`` (a backend ends
    shortly after its client's Terminate or its termination)."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids & _backends(admin, url)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _revoked_fast(idp: IdP, fast: list[bool], token: str) -> None:
    before = len(fast)
    resp = revoke(idp.url, RP, token, hint="access_token")
    assert resp.status_code == 200 and resp.json() == {}
    assert fast[before:] == [True], "the fast path did not revoke it"
    assert introspect(idp.url, RP, token) == {"active": False}


@pytest.mark.postgres
def test_fast_path_revokes_after_its_backend_is_terminated(idp, pg_url, admin, fast):
    """A kept connection whose server process was terminated (``pg_terminate_backend``, as a
    server restart or an idle timeout would drop it) fails on the UPDATE; the fast path
    discards it and runs the UPDATE once more on a fresh connection: the same request is still
    revoked by the fast path (RFC 7009 §2.2 200) and is inactive at introspection at once."""
    _revoked_fast(idp, fast, _issue_access_token(idp, RP["client_id"]))
    old = _backends(admin, pg_url, fast_only=True)
    assert old, "no fast-path connection kept"
    for pid in old:
        assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar() is True
    assert not _wait_gone(admin, pg_url, old)

    token = _issue_access_token(idp, RP["client_id"])
    _revoked_fast(idp, fast, token)
    new = _backends(admin, pg_url, fast_only=True)
    assert new and not new & old
    # Revoked once: a second request finds it revoked, the full path answers 200 (§2.2).
    resp = revoke(idp.url, RP, token)
    assert resp.status_code == 200 and fast[-1] is False
    # and the replacement connection is kept and reused
    _revoked_fast(idp, fast, _issue_access_token(idp, RP["client_id"]))
    assert _backends(admin, pg_url, fast_only=True) == new


@pytest.mark.postgres
def test_one_round_trip_per_revocation_on_postgresql(idp, tmp_path: Path):
    """The point of the kept connections: one round trip (the autocommit UPDATE) per
    revocation - no pre-ping, no BEGIN/COMMIT, no isolation-level switch (libpq's protocol
    trace of every connection the engine opens; a round trip ends with ReadyForQuery)."""
    engine = idp.provider.engine
    tokens = [_issue_access_token(idp, RP["client_id"]) for _ in range(11)]
    fastpath.close_connections(engine)
    engine.dispose()
    opened: list[Any] = []
    files = [(tmp_path / "open.txt").open("w")]

    @event.listens_for(engine.pool, "connect")
    def _trace(dbapi_conn: Any, _record: Any) -> None:
        opened.append(dbapi_conn)
        dbapi_conn.pgconn.trace(files[-1].fileno())

    def retrace(path: Path | None) -> None:
        for conn in opened:
            if not conn.closed:
                conn.pgconn.untrace()  # flushes libpq's buffer
        if path is not None:
            files.append(path.open("w"))
            for conn in opened:
                if not conn.closed:
                    conn.pgconn.trace(files[-1].fileno())

    basic = "Basic " + base64.b64encode(f"{RP['client_id']}:{RP['client_secret']}".encode()).decode()
    # The first call opens the connection; psycopg prepares a statement at its 5th execution on
    # a connection (prepare_threshold), one extra round trip once: measured after that.
    for token in tokens[:6]:
        assert fastpath.try_revoke_access_token(engine, basic, [("token", token)], False)
    retrace(tmp_path / "calls.txt")
    for token in tokens[6:]:
        assert fastpath.try_revoke_access_token(engine, basic, [("token", token)], False)
    retrace(None)
    for f in files:
        f.close()
    lines = (tmp_path / "calls.txt").read_text().splitlines()
    sent = [line.split("\t")[3].split(" ")[0] for line in lines if line.split("\t")[1:2] == ["F"]]
    answers = [line for line in lines if "\tB\t" in line and "ReadyForQuery" in line]
    assert len(answers) == 5, lines
    assert "Query" not in sent  # no "SELECT 1"/";" ping, no BEGIN/COMMIT/ROLLBACK
    assert sent.count("Execute") == 5
    assert len(opened) == 1  # the fast path's one connection, kept (nothing else ran)
    fastpath.close_connections(engine)


@pytest.mark.postgres
def test_concurrent_revocations_each_revoke_their_token(idp, pg_url, admin, fast):
    """8 request threads at once: every token revoked by the fast path and inactive at once;
    no more kept connections than requests ran at once."""
    tokens = [_issue_access_token(idp, RP["client_id"]) for _ in range(80)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda t: revoke(idp.url, RP, t).status_code, tokens))
    assert answers == [200] * 80
    assert fast == [True] * 80
    for token in tokens[::8]:
        assert introspect(idp.url, RP, token) == {"active": False}
    assert 1 <= len(_backends(admin, pg_url, fast_only=True)) <= 8


@pytest.mark.postgres
def test_no_connection_left_when_the_app_stops(pg_url, admin):
    """``IdP.stop`` / gunicorn's ``worker_exit`` close the fast path's connections with the
    engine: no server process is left on the database."""
    server = start_idp(pg_url, clients=[RP])
    try:
        tokens = [_issue_access_token(server, RP["client_id"]) for _ in range(16)]
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(lambda t: revoke(server.url, RP, t).status_code, tokens)) == {200}
        assert _backends(admin, pg_url, fast_only=True)
    finally:
        server.stop()
    assert not _wait_gone(admin, pg_url, _backends(admin, pg_url))
    assert _backends(admin, pg_url) == set()


@pytest.mark.postgres
def test_never_reused_across_engine_dispose(idp, pg_url, admin, fast):
    """After ``engine.dispose()`` (a new pool) the next revocation closes the old pool's kept
    connections and opens a new one: no connection of a disposed pool is used or kept."""
    _revoked_fast(idp, fast, _issue_access_token(idp, RP["client_id"]))
    old = _backends(admin, pg_url, fast_only=True)
    assert old
    idp.provider.engine.dispose()
    _revoked_fast(idp, fast, _issue_access_token(idp, RP["client_id"]))
    assert not _wait_gone(admin, pg_url, old)
    assert _backends(admin, pg_url, fast_only=True)


@pytest.mark.postgres
def test_a_forked_child_leaves_the_parents_connection_alone(idp, pg_url, admin, fast):
    """A process forked after the fast path opened its connection forgets it: the child never
    uses or closes it (closing would end the parent's session), the parent keeps using it."""
    _revoked_fast(idp, fast, _issue_access_token(idp, RP["client_id"]))
    kept = _backends(admin, pg_url, fast_only=True)
    assert kept
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's is registered; collect what it dropped
        ok = len(fastpath._registry) == 0
        gc.collect()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    time.sleep(0.2)
    assert kept <= _backends(admin, pg_url)
    _revoked_fast(idp, fast, _issue_access_token(idp, RP["client_id"]))
    assert _backends(admin, pg_url, fast_only=True) == kept


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kept_connection_serves_fast_and_full_paths_alike(db, request, tmp_path, fast):
    """Many revocations on one kept connection, interleaved with declined ones (already
    revoked: the full path answers 200, §2.2; another client's token: invalid_grant, the
    token unchanged): the kept
    connection holds no transaction between calls, so the full path sees every revocation."""
    url = f"sqlite:///{tmp_path / 'op.db'}" if db == "sqlite" else request.getfixturevalue("pg_url")
    other = client_meta("conn-other", secret="other-secret-" + "o" * 20)
    server = start_idp(url, clients=[RP, other])
    try:
        for _ in range(5):
            token = _issue_access_token(server, RP["client_id"])
            foreign = _issue_access_token(server, other["client_id"])
            _revoked_fast(server, fast, token)
            assert revoke(server.url, RP, token).status_code == 200 and fast[-1] is False
            resp = revoke(server.url, RP, foreign)
            assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant" and fast[-1] is False
            assert introspect(server.url, other, foreign)["active"] is True
    finally:
        server.stop()
