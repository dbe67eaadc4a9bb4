"""termination: target kind 'sid' becomes 'sessions'

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 08:30:00.000000

A termination may end several OP sessions at once (an RP-initiated logout ends the hinted
session and the browser's own in one transaction), so its target kind is ``sessions`` with the
sids in ``target_value``. Existing audit records are renamed; nothing else changes.
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE termination SET target_kind = 'sessions' WHERE target_kind = 'sid'")


def downgrade() -> None:
    op.execute("UPDATE termination SET target_kind = 'sid' WHERE target_kind = 'sessions'")
