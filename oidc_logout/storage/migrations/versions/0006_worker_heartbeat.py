"""worker heartbeat: oidc_logout_worker_heartbeat

Revision ID: 0006_worker_heartbeat
Revises: 0006_ssf
Create Date: 2026-12-03 10:40:00.000000

Each ``oidc-logout worker`` upserts its row every few seconds; the OP's ``/readyz`` in workers
mode (embedded dispatcher off) checks that some worker was seen recently.
"""

import sqlalchemy as sa
from alembic import op

import oidc_logout.storage.base

revision = "0006_worker_heartbeat"
down_revision = "0006_ssf"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_logout_worker_heartbeat",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("started_at", oidc_logout.storage.base.UTCDateTime(), nullable=False),
        sa.Column("seen_at", oidc_logout.storage.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_oidc_logout_worker_heartbeat")),
    )
    with op.batch_alter_table("oidc_logout_worker_heartbeat", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oidc_logout_worker_heartbeat_seen_at"), ["seen_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("oidc_logout_worker_heartbeat", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_logout_worker_heartbeat_seen_at"))
    op.drop_table("oidc_logout_worker_heartbeat")
