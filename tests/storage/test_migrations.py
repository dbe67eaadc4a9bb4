"""Alembic migrations on SQLite and PostgreSQL: upgrade, downgrade and upgrade again."""

from __future__ import annotations

import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from oidc_logout.storage.base import Base
from oidc_logout.storage.schema import (
    MIGRATIONS,
    alembic_config,
    downgrade,
    make_engine,
    upgrade,
)

APP_TABLES = {t.name for t in Base.metadata.sorted_tables}


def _version_table() -> str:
    """The Alembic version table the project's env.py configures (default alembic_version)."""
    env = (MIGRATIONS / "env.py").read_text()
    match = re.search(r'VERSION_TABLE\s*=\s*["\']([^"\']+)["\']', env)
    return match.group(1) if match else "alembic_version"


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()  # type: ignore[return-value]


def _version(engine) -> str | None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": _version_table()}
        ).get_current_revision()


def test_upgrade_downgrade_upgrade_round_trip(database_url):
    """Alembic: the schema goes to head, back to base and to head again without error."""
    engine = make_engine(database_url)
    try:
        upgrade(engine)  # the PostgreSQL fixture is already at head: a no-op there
        assert _version(engine) == _head()
        assert set(inspect(engine).get_table_names()) >= APP_TABLES

        downgrade(engine, "base")
        assert _version(engine) is None
        assert not APP_TABLES & set(inspect(engine).get_table_names())

        upgrade(engine)
        assert _version(engine) == _head()
        assert set(inspect(engine).get_table_names()) >= APP_TABLES
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(migrated_engine):
    """Alembic autogenerate: after upgrade there is no difference between the models and the database."""
    engine = migrated_engine
    with engine.connect() as conn:
        version_table = _version_table()
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": False,
                "version_table": version_table,
                "include_name": lambda name, kind, _parent: not (kind == "table" and name == version_table),
            },
        )
        diffs = compare_metadata(ctx, Base.metadata)
    assert diffs == []


def test_upgrade_is_idempotent(migrated_engine):
    """Alembic: upgrading a database already at head changes nothing and keeps the data."""
    engine = migrated_engine
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO signing_key (kid, alg, private_jwk, created_at) "
                "VALUES ('k1', 'RS256', '{}', CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM signing_key WHERE kid = 'k1'")).scalar() == 1


def test_the_partial_index_migration_and_the_model_agree_on_the_predicate():
    """Migration 0002 is history and keeps its literal; the model builds the same predicate
    from the vocabulary, so the index the claim query relies on is the one the schema has."""
    import importlib.util
    from pathlib import Path

    import oidc_logout.storage.migrations.versions as versions
    from oidc_logout.storage.models import PENDING_BACKCHANNEL_PREDICATE

    # 0006_ssf re-created the index for both pushed channels (back-channel logout, SSF push).
    path = Path(versions.__path__[0]) / "0006_ssf.py"
    spec = importlib.util.spec_from_file_location("m0006_ssf", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NEW_PREDICATE == PENDING_BACKCHANNEL_PREDICATE
