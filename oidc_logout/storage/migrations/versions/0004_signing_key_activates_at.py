"""signing_key: activates_at (two-step key rollover)

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-10 10:00:00.000000

``oidc-logout rotate-key`` now publishes a new key in the JWKS first and signs with it only
from ``activates_at`` on (the previous key's ``retired_at`` is set to the same instant), so
RPs holding a cached JWKS can verify logout tokens throughout a rotation. NULL means "signs
since it was created" (every existing key). Additive: old workers ignore the column.
"""

import sqlalchemy as sa
from alembic import op

import oidc_logout.storage.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("activates_at", oidc_logout.storage.base.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signing_key", schema=None) as batch_op:
        batch_op.drop_column("activates_at")
