"""delivery: partial index for the claim query

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00.000000

The delivery claim (``oidc_logout.delivery.outbox.claim_due``) selects due pending
back-channel rows ordered by ``next_attempt_at, id`` with a LIMIT (and ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL). ``ix_delivery_due (state, next_attempt_at)`` cannot serve that
order (``id`` is missing and the old query OR-ed two states); this partial index holds exactly
the rows the query wants, in its order. Partial indexes work on PostgreSQL and SQLite.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PREDICATE = "state = 'pending' AND channel = 'backchannel'"


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_pending_due",
            ["next_attempt_at", "id"],
            unique=False,
            postgresql_where=sa.text(PREDICATE),
            sqlite_where=sa.text(PREDICATE),
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_pending_due")
