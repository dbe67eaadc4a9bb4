"""Schema changes for rolling deploys: migrations take a lock, so concurrent starts on a fresh
database all succeed; with auto-migration off, start-up refuses a schema that is not at head."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from oidc_logout.config import Settings
from oidc_logout.provider import Provider
from oidc_logout.storage.models import SigningKey
from oidc_logout.storage.schema import SchemaNotAtHead, check_at_head, make_engine

STARTS = 4


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all (not the migrated template of ``pg_databases.new()``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    dbs = request.getfixturevalue("pg_databases")
    name = f"oidc_fresh_{secrets.token_hex(5)}"
    with dbs.admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield dbs._url(name)
    finally:
        with dbs.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _start(url: str, **settings: object) -> Provider:
    provider = Provider(Settings(database_url=url, **settings))  # type: ignore[arg-type]
    provider.setup()
    return provider


def test_concurrent_starts_on_a_fresh_database_all_succeed(empty_database: str) -> None:
    """Four processes starting at once on an empty database: all succeed, the schema is at
    head, and the first-start signing keys exist once per algorithm (not once per starter)."""
    barrier = threading.Barrier(STARTS)
    errors: list[BaseException] = []
    providers: list[Provider] = []

    def start() -> None:
        barrier.wait()
        try:
            providers.append(_start(empty_database))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(STARTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        assert len(providers) == STARTS
        engine = make_engine(empty_database)
        try:
            check_at_head(engine)
            with engine.connect() as c:
                per_alg = dict(c.execute(select(SigningKey.alg, func.count()).group_by(SigningKey.alg)).all())
            assert per_alg == {"ES256": 1, "RS256": 1}
        finally:
            engine.dispose()
    finally:
        for p in providers:
            p.engine.dispose()


def test_auto_migrate_off_on_an_empty_database_names_the_command(empty_database: str) -> None:
    """OIDC_LOGOUT_AUTO_MIGRATE=false and no schema: start-up fails clearly, creates nothing."""
    provider = Provider(Settings(database_url=empty_database, auto_migrate=False))
    try:
        with pytest.raises(SchemaNotAtHead, match="oidc-logout migrate"):
            provider.setup()
    finally:
        provider.engine.dispose()


def test_auto_migrate_off_starts_on_a_migrated_database(empty_database: str) -> None:
    """The production path: `oidc-logout migrate` first, then start with auto-migration off."""
    from oidc_logout.cli import main

    assert main(["migrate", "--database-url", empty_database]) == 0
    _start(empty_database, auto_migrate=False).engine.dispose()


def test_init_app_honours_the_setting(empty_database: str) -> None:
    """The Flask extension reads OIDC_LOGOUT_AUTO_MIGRATE like every other setting."""
    from flask import Flask

    from oidc_logout.op import OIDCLogout

    app = Flask(__name__)
    app.secret_key = "s"
    app.config.update(OIDC_LOGOUT_DATABASE_URL=empty_database, OIDC_LOGOUT_AUTO_MIGRATE="false")
    with pytest.raises(SchemaNotAtHead, match="oidc-logout migrate"):
        OIDCLogout(app, users=object(), start_background=False)  # type: ignore[arg-type]
