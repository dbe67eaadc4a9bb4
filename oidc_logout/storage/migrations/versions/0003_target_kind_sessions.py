"""termination target kind 'sessions'; amr and acr of OP sessions

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 08:30:00.000000

* A termination may end several OP sessions at once (an RP-initiated logout ends the hinted
  session and the browser's own in one transaction), so its target kind is ``sessions`` with
  the sids in ``target_value``. Existing audit records are renamed.
* An OP session remembers how its End-User authenticated (``amr``, ``acr``: Core 1.0 §2), so
  the host's login and MFA reach ID tokens. Both nullable: existing rows stay valid.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE termination SET target_kind = 'sessions' WHERE target_kind = 'sid'")
    with op.batch_alter_table("op_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amr", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("acr", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("op_session", schema=None) as batch_op:
        batch_op.drop_column("acr")
        batch_op.drop_column("amr")
    op.execute("UPDATE termination SET target_kind = 'sid' WHERE target_kind = 'sessions'")
