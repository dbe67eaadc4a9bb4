"""Commands that read never change the database: a missing SQLite file is not created, an
empty or old schema is not migrated, no key is created; each fails with the database exit code
(6), one line and a hint."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from oidc_logout.cli_support import EXIT_DATABASE, EXIT_NOT_FOUND
from oidc_logout.storage.schema import current_revision, make_engine
from tests.conftest import PG_ADMIN_URL

from .conftest import one_error, run_cli

READ_ONLY = (
    ("deliveries",),
    ("deliveries", "--state", "dead"),
    ("show", "T-1"),
    ("keys", "list"),
)


@pytest.mark.parametrize("command", READ_ONLY)
def test_a_read_only_command_on_a_missing_sqlite_file_does_not_create_it(tmp_path: Path, command) -> None:
    db = tmp_path / "typo.db"
    out = run_cli(*command, "--database-url", f"sqlite:///{db}")
    assert out.returncode == EXIT_DATABASE, out.stderr
    assert "no database at" in one_error(out) and str(db) in out.stderr
    assert "oidc-logout migrate" in out.stderr
    assert not db.exists()


def test_without_a_database_url_a_command_refuses_the_working_directory_default(tmp_path: Path) -> None:
    out = run_cli("deliveries", cwd=tmp_path)
    assert out.returncode == 2
    assert "OIDC_LOGOUT_DATABASE_URL" in one_error(out)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def empty_pg_database(pg_databases):
    """A PostgreSQL database that exists but was never migrated."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"oidc_empty_{secrets.token_hex(4)}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path):
    """A database that exists but was never migrated, on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        return request.getfixturevalue("empty_pg_database")
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    make_engine(url).connect().close()  # creates the file, no tables
    return url


@pytest.mark.parametrize("command", [*READ_ONLY, ("retry",), ("expire",), ("rotate-secret", "--client", "x")])
def test_a_command_on_an_unmigrated_database_fails_and_leaves_it_unmigrated(
    empty_database: str, command
) -> None:
    out = run_cli(*command, "--database-url", empty_database, OIDC_LOGOUT_DEV_MODE="true")
    assert out.returncode == EXIT_DATABASE, out.stderr
    assert "schema" in one_error(out) and "oidc-logout migrate" in out.stderr
    engine = make_engine(empty_database)
    try:
        assert current_revision(engine) is None
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_an_unreachable_database_is_one_line_with_the_database_code() -> None:
    out = run_cli("deliveries", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert out.returncode == EXIT_DATABASE
    assert "cannot use the database" in one_error(out)


def test_migrate_reports_what_it_applied_then_that_it_is_at_head(empty_database: str) -> None:
    first = run_cli("migrate", "--json", "--database-url", empty_database)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["before"] is None and report["applied"][0] == "0001"
    assert report["applied"][-1] == report["after"]
    second = run_cli("migrate", "--database-url", empty_database)
    assert second.returncode == 0 and "already at head" in second.stdout


def test_only_keys_create_makes_signing_keys(empty_database: str) -> None:
    """migrate creates no key; a command that must sign says so (exit 6) instead of creating
    one; ``keys create`` makes one per default algorithm, a second run none."""
    env = {"OIDC_LOGOUT_DEV_MODE": "true", "OIDC_LOGOUT_DATABASE_URL": empty_database}
    assert run_cli("migrate", **env).returncode == 0
    listed = run_cli("keys", "list", "--json", **env)
    assert listed.returncode == 0 and json.loads(listed.stdout)["keys"] == []
    out = run_cli("terminate", "--sub", "alice", "--reason", "r", **env)
    assert out.returncode == EXIT_DATABASE and "no signing key" in one_error(out)
    assert "keys create" in out.stderr
    created = run_cli("keys", "create", "--json", **env)
    assert created.returncode == 0, created.stderr
    assert sorted(k["alg"] for k in json.loads(created.stdout)["created"]) == ["ES256", "RS256"]
    again = run_cli("keys", "create", "--json", **env)
    assert json.loads(again.stdout)["created"] == []
    listed = json.loads(run_cli("keys", "list", "--json", **env).stdout)["keys"]
    assert {(k["alg"], k["status"]) for k in listed} == {("ES256", "signing"), ("RS256", "signing")}


@pytest.mark.postgres
def test_concurrent_migrations_apply_each_revision_once(empty_pg_database: str) -> None:
    """Two `oidc-logout migrate` at once on PostgreSQL: the advisory lock makes one apply the
    revisions and the other find the schema at head."""
    import concurrent.futures

    empty_database = empty_pg_database
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outs = list(
            pool.map(lambda _: run_cli("migrate", "--json", "--database-url", empty_database), range(2))
        )
    assert [o.returncode for o in outs] == [0, 0], [o.stderr for o in outs]
    applied = sorted(len(json.loads(o.stdout)["applied"]) for o in outs)
    assert applied[0] == 0 and applied[1] >= 5


def test_errors_name_what_is_missing_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'op.db'}"
    env = {"OIDC_LOGOUT_DEV_MODE": "true", "OIDC_LOGOUT_DATABASE_URL": url}
    assert run_cli("migrate", "--create-keys", **env).returncode == 0
    for command, words in (
        (("retry", "--id", "99999"), "99999"),
        (("rotate-secret", "--client", "nope"), "nope"),
        (("show", "no-such-termination"), "no-such-termination"),
    ):
        out = run_cli(*command, **env)
        assert out.returncode == EXIT_NOT_FOUND, (command, out.stderr)
        assert words in one_error(out)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = run_cli("deliveries", "--debug", "--database-url", f"sqlite:///{tmp_path / 'none.db'}")
    assert out.returncode == EXIT_DATABASE and "Traceback" in out.stderr
