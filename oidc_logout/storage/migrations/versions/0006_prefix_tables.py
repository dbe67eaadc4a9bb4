"""every table of the extension carries the ``oidc_logout_`` prefix

Revision ID: 0006_prefix_tables
Revises: 0006_cutoff
Create Date: 2026-12-03 10:40:00.000000

Extension mode (issue 11) shares the host IdP's database: names such as ``oauth_token``,
``delivery`` or ``termination`` collide with the host's own tables (an Authlib IdP usually has
an ``oauth2_token``, many have a ``delivery``). Every table is renamed to ``oidc_logout_<name>``
and every index and constraint to the name the naming convention of
:mod:`oidc_logout.storage.base` gives it under the new table name, so later migrations can
address them by name. Data is kept.

PostgreSQL renames in place (``ALTER TABLE/INDEX ... RENAME``, sequences included). SQLite
renames the table (which rewrites the foreign keys of other tables that point at it), then
rebuilds it once through Alembic's batch mode from its own reflected definition with the new
constraint and index names (SQLite cannot rename a constraint in place).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006_prefix_tables"
down_revision = "0006_cutoff"
branch_labels = None
depends_on = None

#: Old name -> new name.
RENAMES = {
    "oidc_client": "oidc_logout_client",
    "op_session": "oidc_logout_op_session",
    "session_participant": "oidc_logout_session_participant",
    "authorization_code": "oidc_logout_authorization_code",
    "oauth_grant": "oidc_logout_grant",
    "oauth_token": "oidc_logout_token",
    "termination": "oidc_logout_termination",
    "delivery": "oidc_logout_delivery",
    "delivery_attempt": "oidc_logout_delivery_attempt",
    "signing_key": "oidc_logout_signing_key",
}
#: Indexes named explicitly in the models (not by the convention's ``ix_<table>_<column>``).
EXPLICIT_INDEXES = {
    "ix_delivery_due": "ix_oidc_logout_delivery_due",
    "ix_delivery_pending_due": "ix_oidc_logout_delivery_pending_due",
    "ix_oauth_token_grant_kind": "ix_oidc_logout_token_grant_kind",
    "ix_op_session_subject_sid": "ix_oidc_logout_op_session_subject_sid",
    "ix_session_participant_client_sid": "ix_oidc_logout_session_participant_client_sid",
    "ix_oauth_grant_client_id_id": "ix_oidc_logout_grant_client_id_id",
    "ix_termination_running": "ix_oidc_logout_termination_running",
}
#: The Alembic version table (never renamed, holds no constraint of the convention).
VERSION_TABLE = "oidc_logout_alembic_version"


def upgrade() -> None:
    _apply(RENAMES, EXPLICIT_INDEXES)


def downgrade() -> None:
    _apply({new: old for old, new in RENAMES.items()}, {new: old for old, new in EXPLICIT_INDEXES.items()})


def _apply(renames: dict[str, str], explicit: dict[str, str]) -> None:
    bind = op.get_bind()
    for old, new in renames.items():
        op.rename_table(old, new)
    # The renamed tables, and those already prefixed (they may hold a foreign key to one).
    prefixed = [
        t
        for t in sa.inspect(bind).get_table_names()
        if t.startswith("oidc_logout_") and t != VERSION_TABLE and t not in renames.values()
    ]
    tables = [*renames.values(), *sorted(prefixed)]
    if bind.dialect.name == "postgresql":
        for table in tables:
            _rename_in_place(bind, table, renames, explicit)
    else:
        for table in tables:
            _rebuild_with_names(bind, table, explicit)


def _fit(name: str, dialect: sa.engine.Dialect) -> str:
    """The name as SQLAlchemy renders a convention name too long for the dialect (PostgreSQL:
    63 characters): truncated, with four hex digits of its MD5 for uniqueness."""
    limit = dialect.max_identifier_length
    if len(name) <= limit:
        return name
    return name[: limit - 8] + "_" + hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()[-4:]


def _pk_name(table: str) -> str:
    return f"pk_{table}"


def _uq_name(table: str, columns: list[str]) -> str:
    return f"uq_{table}_" + "_".join(columns)


def _fk_name(table: str, columns: list[str], referred: str) -> str:
    return f"fk_{table}_{columns[0]}_{referred}"


def _ix_name(table: str, old: str, columns: list[str], explicit: dict[str, str]) -> str:
    """An index named for ``table`` keeps its name (explicit names such as
    ``ix_oidc_logout_rate_event_key_at`` included); one named for the old table gets the
    convention's name, or its explicit new name."""
    if old in explicit:
        return explicit[old]
    if old.startswith(f"ix_{table}_"):
        return old
    return f"ix_{table}_{columns[0]}"


def _rename_in_place(
    bind: sa.Connection, table: str, renames: dict[str, str], explicit: dict[str, str]
) -> None:
    insp = sa.inspect(bind)
    dialect = bind.dialect
    prep = dialect.identifier_preparer
    quoted = prep.quote(table)

    def rename_constraint(old: str | None, new: str) -> None:
        new = _fit(new, dialect)
        if old and old != new:
            op.execute(f"ALTER TABLE {quoted} RENAME CONSTRAINT {prep.quote(old)} TO {prep.quote(new)}")

    pk = insp.get_pk_constraint(table)
    rename_constraint(pk.get("name"), _pk_name(table))
    for uq in insp.get_unique_constraints(table):
        rename_constraint(uq["name"], _uq_name(table, uq["column_names"]))
    for fk in insp.get_foreign_keys(table):
        rename_constraint(fk["name"], _fk_name(table, fk["constrained_columns"], fk["referred_table"]))
    insp = sa.inspect(bind)  # afresh: the inspector caches what it reflected before the renames
    for ix in insp.get_indexes(table):
        if ix.get("duplicates_constraint") or not ix["name"]:
            continue  # a unique constraint's own index: renamed with the constraint
        new = _fit(_ix_name(table, ix["name"], ix["column_names"], explicit), dialect)  # type: ignore[arg-type]
        if new != ix["name"]:
            op.execute(f"ALTER INDEX {prep.quote(ix['name'])} RENAME TO {prep.quote(new)}")
    # Serial sequences keep the table's old name otherwise (cosmetic, but operators read them).
    for column in [c["name"] for c in insp.get_columns(table) if c["name"] == "id"]:
        seq = bind.execute(
            sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": column}
        ).scalar()
        if seq:
            wanted = f"{table}_{column}_seq"
            current = seq.split(".")[-1].strip('"')
            if current != wanted:
                op.execute(f"ALTER SEQUENCE {seq} RENAME TO {prep.quote(wanted)}")
    del renames


def _rebuild_with_names(bind: sa.Connection, table: str, explicit: dict[str, str]) -> None:
    """SQLite: recreate ``table`` from its reflected definition with every constraint and index
    named for the table's current name (Alembic batch mode: create, copy, drop, rename)."""
    meta = sa.MetaData()
    reflected = sa.Table(table, meta, autoload_with=bind)
    for constraint in reflected.constraints:
        if isinstance(constraint, sa.PrimaryKeyConstraint):
            constraint.name = _pk_name(table)
        elif isinstance(constraint, sa.UniqueConstraint):
            constraint.name = _uq_name(table, [c.name for c in constraint.columns])
        elif isinstance(constraint, sa.ForeignKeyConstraint):
            constraint.name = _fk_name(
                table, [c.name for c in constraint.columns], constraint.referred_table.name
            )
    for index in reflected.indexes:
        index.name = sa.sql.elements.quoted_name(
            _ix_name(table, str(index.name), [c.name for c in index.columns], explicit), None
        )
    with op.batch_alter_table(table, recreate="always", copy_from=reflected):
        pass
