"""consent and client trust: oidc_client.trusted, oidc_logout_consent, oidc_logout_rate_event

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 09:00:00.000000

Security issue 12: clients that registered themselves (RFC 7591) are untrusted and need the
End-User's consent (Core 1.0 §3.1.2.4), remembered per client and scope in
``oidc_logout_consent``; operator-provisioned clients are ``trusted``. Existing clients start
untrusted (the safe side: the operator's next ``--clients`` load marks its own clients again).
``oidc_logout_rate_event`` counts failed sign-ins and registrations for throttling.
"""

import sqlalchemy as sa
from alembic import op

import oidc_logout.storage.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oidc_client", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trusted", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "oidc_logout_consent",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("created_at", oidc_logout.storage.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", oidc_logout.storage.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oidc_client.client_id"],
            name=op.f("fk_oidc_logout_consent_client_id_oidc_client"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_logout_consent")),
        sa.UniqueConstraint("subject", "client_id", name=op.f("uq_oidc_logout_consent_subject_client_id")),
    )
    with op.batch_alter_table("oidc_logout_consent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_logout_consent_client_id"), ["client_id"], unique=False)
    op.create_table(
        "oidc_logout_rate_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("at", oidc_logout.storage.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_logout_rate_event")),
    )
    with op.batch_alter_table("oidc_logout_rate_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_logout_rate_event_at"), ["at"], unique=False)
        batch_op.create_index("ix_oidc_logout_rate_event_key_at", ["key_hash", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oidc_logout_rate_event", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_logout_rate_event_key_at")
        batch_op.drop_index(batch_op.f("ix_oidc_logout_rate_event_at"))
    op.drop_table("oidc_logout_rate_event")
    with op.batch_alter_table("oidc_logout_consent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_logout_consent_client_id"))
    op.drop_table("oidc_logout_consent")
    with op.batch_alter_table("oidc_client", schema=None) as batch_op:
        batch_op.drop_column("trusted")
