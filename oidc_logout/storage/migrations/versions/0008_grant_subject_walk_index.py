"""grant: index on (subject, id)

Revision ID: 0008_grant_subject
Revises: 0007_termination_target
Create Date: 2026-12-03 18:10:00.000000

A termination by subject walks the subject's grants after its sessions, in keyset pages
(``Grant.subject = ? AND Grant.id > ? ORDER BY Grant.id LIMIT n``,
``oidc_logout.storage.own_tokens.OwnTokenStore.walk_subject_grants``): the single-column
subject index would sort all of the subject's grants for every page.
"""

from alembic import op

revision = "0008_grant_subject"
down_revision = "0007_termination_target"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oidc_logout_grant", schema=None) as batch_op:
        batch_op.create_index("ix_oidc_logout_grant_subject_id", ["subject", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oidc_logout_grant", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_logout_grant_subject_id")
