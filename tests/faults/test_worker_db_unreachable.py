"""A worker that cannot reach its database (issue 14 item 4): it backs off with ONE warning
line per backoff step (no traceback), exits non-zero (69) after
``worker_db_unreachable_exit_after`` seconds, and carries on normally if the database comes
back before that. Real ``oidc-logout worker`` processes, a real closed port, a real
PostgreSQL database taken away (renamed) and given back."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from oidc_logout.delivery.worker import EXIT_DB_UNREACHABLE
from oidc_logout.storage import schema
from oidc_logout.storage.models import DELIVERED
from tests.support.servers import SilentServer

from .conftest import Receiver, WorkerProc, factory_for, seed_fanout, state_counts, wait_until

EXIT_AFTER = 4.0
#: Backoff steps 0.5, 1, 2, 4 ... s: within EXIT_AFTER at most log2(EXIT_AFTER / 0.5) + 2 lines.
MAX_STEPS = 5


def unreachable_lines(w: WorkerProc) -> list[str]:
    return [ln for ln in w.lines if "WARNING" in ln and "database unreachable" in ln]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the with block ends


@pytest.mark.postgres
def test_worker_on_a_closed_port_warns_once_per_step_and_exits_69() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    worker = WorkerProc(url, cli=True, OIDC_LOGOUT_WORKER_DB_UNREACHABLE_EXIT_AFTER=str(EXIT_AFTER))
    try:
        code = worker.proc.wait(EXIT_AFTER + 30)
    finally:
        worker.terminate()
    time.sleep(0.2)  # the log drain thread reads the last lines
    log = "\n".join(worker.lines)
    assert code == EXIT_DB_UNREACHABLE, log
    assert "Traceback" not in log, log
    steps = unreachable_lines(worker)
    assert 2 <= len(steps) <= MAX_STEPS, log
    assert any("ERROR" in ln and "giving up" in ln for ln in worker.lines), log
    # Nothing else floods the log: start, steps, the listener's one warning, give-up, exit.
    assert len(worker.lines) <= len(steps) + 8, log


def test_worker_on_a_server_that_accepts_and_never_answers_gives_up_and_exits_69() -> None:
    """A database address that accepts TCP and never answers (a stalled host): each connection
    attempt ends at its connect_timeout (libpq would wait forever), so the worker backs off,
    gives up and exits 69 as on a closed port, instead of hanging deaf to SIGTERM."""
    silent = SilentServer()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.port}/test?connect_timeout=1"
    worker = WorkerProc(url, cli=True, OIDC_LOGOUT_WORKER_DB_UNREACHABLE_EXIT_AFTER=str(EXIT_AFTER))
    try:
        code = worker.proc.wait(EXIT_AFTER + 30)
    finally:
        worker.terminate()
        silent.close()
    time.sleep(0.2)
    log = "\n".join(worker.lines)
    assert code == EXIT_DB_UNREACHABLE, log
    assert "Traceback" not in log and unreachable_lines(worker), log


def test_a_postgresql_engine_gives_up_connecting_after_its_default_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """make_engine gives every PostgreSQL engine a connect_timeout (PG_CONNECT_TIMEOUT) unless
    its URL names one: a stalled server is an error, not a hang."""
    monkeypatch.setattr(schema, "PG_CONNECT_TIMEOUT", 1)
    silent = SilentServer()
    engine = schema.make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{silent.port}/test")
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="timeout"):
            engine.connect()
    finally:
        engine.dispose()
        silent.close()
    assert time.monotonic() - started < 8


@pytest.mark.postgres
def test_worker_resumes_when_its_database_returns_in_time(pg_url: str, pg_databases: Any) -> None:
    rp = Receiver()
    factory = factory_for(pg_url)
    name = pg_url.rsplit("/", 1)[1]
    away = f"{name}_away"
    term_id, ids = seed_fanout(factory, sessions=20, uris=[rp.url("/bc")])
    factory.kw["bind"].dispose()

    def rename(src: str, dst: str) -> None:
        with pg_databases.admin.connect() as c:
            c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": src}
            )
            c.execute(text(f'ALTER DATABASE "{src}" RENAME TO "{dst}"'))

    rename(name, away)  # the worker's database is gone
    worker = WorkerProc(pg_url, cli=True, OIDC_LOGOUT_WORKER_DB_UNREACHABLE_EXIT_AFTER="120")
    try:
        assert wait_until(lambda: len(unreachable_lines(worker)) >= 2, 30), worker.log_tail()
        rename(away, name)  # ... and back
        assert wait_until(lambda: state_counts(factory, term_id).get(DELIVERED, 0) == len(ids), 60), (
            worker.log_tail()
        )
        assert worker.alive()
        assert worker.terminate() == 0
    finally:
        worker.terminate()
        rp.stop()
        factory.kw["bind"].dispose()
        with pg_databases.admin.connect() as c:  # whatever happened, pg_url's drop finds it
            c.execute(text(f'DROP DATABASE IF EXISTS "{away}" WITH (FORCE)'))
    log = "\n".join(worker.lines)
    assert "Traceback" not in log, log
    assert any("database reachable again" in ln for ln in worker.lines), log
    assert len(rp.per_sid) == len(ids)
