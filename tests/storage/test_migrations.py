"""Alembic migrations on SQLite and PostgreSQL: upgrade, downgrade and upgrade again."""

from __future__ import annotations

import re

import pytest
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
                "INSERT INTO oidc_logout_signing_key (kid, alg, private_jwk, created_at) "
                "VALUES ('k1', 'RS256', '{}', CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM oidc_logout_signing_key WHERE kid = 'k1'")).scalar() == 1
        )


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


_OLD_ROWS = [
    "INSERT INTO oidc_client (client_id, secret_version, token_endpoint_auth_method, redirect_uris, "
    "grant_types, response_types, scope, id_token_signed_response_alg, post_logout_redirect_uris, "
    "backchannel_logout_session_required, frontchannel_logout_session_required, extra_metadata, "
    "created_at, trusted) VALUES ('rp1', 1, 'none', '[]', '[]', '[]', 'openid', 'RS256', '[]', "
    "true, true, '{}', CURRENT_TIMESTAMP, true)",
    "INSERT INTO termination (id, target_kind, target_value, reason, initiator, include_offline, "
    "sessions_ended, tokens_revoked, created_at) "
    "VALUES ('t1', 'subject', 'alice', 'test', 'test', false, 1, 0, CURRENT_TIMESTAMP)",
    "INSERT INTO op_session (sid, subject, auth_time, created_at, last_seen_at, ended_at, termination_id) "
    "VALUES ('s1', 'alice', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 't1')",
    "INSERT INTO session_participant (sid, client_id, first_at, last_at) "
    "VALUES ('s1', 'rp1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
]


def test_table_prefix_migration_keeps_rows_and_references(database_url):
    """Migration 0006 renames every table to ``oidc_logout_*``: rows written under the old
    names are there afterwards, foreign keys still point at the right (renamed) tables, and
    the downgrade gives the old names back with the rows."""
    from sqlalchemy.exc import IntegrityError

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        downgrade(engine, "base")
        upgrade(engine, "0005")
        with engine.begin() as conn:
            for sql in _OLD_ROWS:
                conn.execute(text(sql))
        upgrade(engine)
        names = set(inspect(engine).get_table_names())
        assert {"oidc_logout_client", "oidc_logout_op_session", "oidc_logout_delivery"} <= names
        assert not {"oidc_client", "op_session", "delivery", "oauth_token", "termination"} & names
        with engine.connect() as conn:
            assert conn.execute(text("SELECT subject FROM oidc_logout_op_session")).scalar() == "alice"
            assert (
                conn.execute(text("SELECT client_id FROM oidc_logout_session_participant")).scalar() == "rp1"
            )
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO oidc_logout_session_participant (sid, client_id, first_at, last_at) "
                    "VALUES ('no-such-session', 'rp1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        downgrade(engine, "0005")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT termination_id FROM op_session")).scalar() == "t1"
        upgrade(engine)
    finally:
        engine.dispose()
