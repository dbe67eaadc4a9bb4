"""cut-off at commit and chunked terminations: oidc_logout_cutoff, termination progress

Revision ID: 0006_cutoff
Revises: 0006_hosttokens
Create Date: 2026-12-03 10:40:00.000000

Issue 17 (kill switch at scale): a termination by subject, client or credential records one
``oidc_logout_cutoff`` row, so its whole scope is dead at commit whatever its size; its per-row
work runs afterwards in chunks whose progress lives on the termination (``state``,
``progress_phase``, ``progress_cursor``, counters). Existing terminations are ``complete``.
The composite indexes give those chunks a keyset walk whose cost per chunk does not grow with
the rows already done.
"""

import sqlalchemy as sa
from alembic import op

import oidc_logout.storage.base

revision = "0006_cutoff"
down_revision = "0006_hosttokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("termination", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=40), server_default="complete", nullable=False)
        )
        batch_op.add_column(sa.Column("progress_phase", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("progress_cursor", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("chunks_done", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("deliveries_written", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("progress_at", oidc_logout.storage.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("completed_at", oidc_logout.storage.base.UTCDateTime(), nullable=True))
        batch_op.create_index(
            "ix_termination_running",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
    op.create_table(
        "oidc_logout_cutoff",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("before", oidc_logout.storage.base.UTCDateTime(), nullable=False),
        sa.Column("below_version", sa.Integer(), nullable=True),
        sa.Column("include_offline", sa.Boolean(), nullable=False),
        sa.Column("termination_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["termination_id"],
            ["termination.id"],
            name=op.f("fk_oidc_logout_cutoff_termination_id_termination"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_logout_cutoff")),
    )
    with op.batch_alter_table("oidc_logout_cutoff", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oidc_logout_cutoff_termination_id"), ["termination_id"], unique=False
        )
        batch_op.create_index("ix_oidc_logout_cutoff_value_kind", ["value", "kind"], unique=False)
    with op.batch_alter_table("op_session", schema=None) as batch_op:
        batch_op.create_index("ix_op_session_subject_sid", ["subject", "sid"], unique=False)
    with op.batch_alter_table("session_participant", schema=None) as batch_op:
        batch_op.create_index("ix_session_participant_client_sid", ["client_id", "sid"], unique=False)
    with op.batch_alter_table("oauth_grant", schema=None) as batch_op:
        batch_op.create_index("ix_oauth_grant_client_id_id", ["client_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oauth_grant", schema=None) as batch_op:
        batch_op.drop_index("ix_oauth_grant_client_id_id")
    with op.batch_alter_table("session_participant", schema=None) as batch_op:
        batch_op.drop_index("ix_session_participant_client_sid")
    with op.batch_alter_table("op_session", schema=None) as batch_op:
        batch_op.drop_index("ix_op_session_subject_sid")
    with op.batch_alter_table("oidc_logout_cutoff", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_logout_cutoff_value_kind")
        batch_op.drop_index(batch_op.f("ix_oidc_logout_cutoff_termination_id"))
    op.drop_table("oidc_logout_cutoff")
    with op.batch_alter_table("termination", schema=None) as batch_op:
        batch_op.drop_index("ix_termination_running")
        for column in (
            "completed_at",
            "progress_at",
            "deliveries_written",
            "chunks_done",
            "progress_cursor",
            "progress_phase",
            "state",
        ):
            batch_op.drop_column(column)
