"""termination: index on (target_kind, target_value)

Revision ID: 0007_termination_target
Revises: 0006_prefix_tables
Create Date: 2026-12-03 17:00:00.000000

A termination by grant that finds its grant already revoked (RFC 7009: two revocations of one
refresh token racing) gives back the termination that revoked it
(``oidc_logout.termination.terminate``): a look-up by target that must not scan the whole
audit history, which grows by one row per revoked refresh token.
"""

from alembic import op

revision = "0007_termination_target"
down_revision = "0006_prefix_tables"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oidc_logout_termination", schema=None) as batch_op:
        batch_op.create_index(
            "ix_oidc_logout_termination_target", ["target_kind", "target_value"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("oidc_logout_termination", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_logout_termination_target")
