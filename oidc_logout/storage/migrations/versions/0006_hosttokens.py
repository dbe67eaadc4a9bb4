"""extension mode: oidc_logout_token_session (host code/token row -> OP session)

Revision ID: 0006_hosttokens
Revises: 0006_worker_heartbeat
Create Date: 2026-12-03 11:00:00.000000

A host IdP adopting the extension keeps its own Authlib token model; this side table binds
its authorization codes and token rows to the OP session (sid) they were issued in, so a
termination revokes them. The host's tables are not changed.
"""

import sqlalchemy as sa
from alembic import op

import oidc_logout.storage.base

revision = "0006_hosttokens"
down_revision = "0006_worker_heartbeat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_logout_token_session",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", oidc_logout.storage.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_logout_token_session")),
        sa.UniqueConstraint("kind", "ref", name=op.f("uq_oidc_logout_token_session_kind_ref")),
    )
    with op.batch_alter_table("oidc_logout_token_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_logout_token_session_sid"), ["sid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oidc_logout_token_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_logout_token_session_sid"))
    op.drop_table("oidc_logout_token_session")
