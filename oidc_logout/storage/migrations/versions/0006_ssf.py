"""Shared Signals: SSF streams, their subjects and events; SSF push rows in the claim index

Revision ID: 0006_ssf
Revises: 0005
Create Date: 2026-12-03 11:00:00.000000

Issue 16: ``oidc_logout_ssf_stream`` (SSF 1.0 §8.1.1 stream configurations, owned by the OAuth
client that created them), ``oidc_logout_ssf_subject`` (subjects added or removed, §8.1.3) and
``oidc_logout_ssf_event`` (one Security Event Token per stream and event, RFC 8417; poll queue
for RFC 8936). SSF push deliveries travel through the outbox as ``channel = 'ssf_push'``, so
the partial claim index ``ix_delivery_pending_due`` now covers both pushed channels.
"""

import sqlalchemy as sa
from alembic import op

import oidc_logout.storage.base

revision = "0006_ssf"
down_revision = "0005"
branch_labels = None
depends_on = None

#: The delivery table as migrations before the project-wide rename know it.
DELIVERY = "delivery"
OLD_PREDICATE = "state = 'pending' AND channel = 'backchannel'"
NEW_PREDICATE = "state = 'pending' AND channel IN ('backchannel', 'ssf_push')"


def _pending_index(predicate: str) -> None:
    with op.batch_alter_table(DELIVERY, schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_pending_due")
        batch_op.create_index(
            "ix_delivery_pending_due",
            ["next_attempt_at", "id"],
            unique=False,
            postgresql_where=sa.text(predicate),
            sqlite_where=sa.text(predicate),
        )


def upgrade() -> None:
    utc = oidc_logout.storage.base.UTCDateTime
    op.create_table(
        "oidc_logout_ssf_stream",
        sa.Column("stream_id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("iss", sa.String(length=255), nullable=False),
        sa.Column("aud", sa.String(length=255), nullable=False),
        sa.Column("delivery_method", sa.String(length=40), nullable=False),
        sa.Column("endpoint_url", sa.String(length=2048), nullable=True),
        sa.Column("authorization_header", sa.String(length=2048), nullable=True),
        sa.Column("events_requested", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(length=2048), nullable=True),
        sa.Column("subject_format", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("status_reason", sa.String(length=2048), nullable=True),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("updated_at", utc(), nullable=False),
        sa.Column("last_verification_at", utc(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oidc_client.client_id"],
            name=op.f("fk_oidc_logout_ssf_stream_client_id_oidc_client"),
        ),
        sa.PrimaryKeyConstraint("stream_id", name=op.f("pk_oidc_logout_ssf_stream")),
    )
    with op.batch_alter_table("oidc_logout_ssf_stream", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_logout_ssf_stream_client_id"), ["client_id"], unique=False)
    op.create_table(
        "oidc_logout_ssf_subject",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("stream_id", sa.String(length=40), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stream_id"],
            ["oidc_logout_ssf_stream.stream_id"],
            name=op.f("fk_oidc_logout_ssf_subject_stream_id_oidc_logout_ssf_stream"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_logout_ssf_subject")),
        sa.UniqueConstraint(
            "stream_id", "subject_key", name=op.f("uq_oidc_logout_ssf_subject_stream_id_subject_key")
        ),
    )
    with op.batch_alter_table("oidc_logout_ssf_subject", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_logout_ssf_subject_stream_id"), ["stream_id"], unique=False)
    op.create_table(
        "oidc_logout_ssf_event",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("stream_id", sa.String(length=40), nullable=False),
        sa.Column("termination_id", sa.String(length=40), nullable=True),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("sent_at", utc(), nullable=True),
        sa.Column("acked_at", utc(), nullable=True),
        sa.Column("error", sa.String(length=2048), nullable=True),
        sa.ForeignKeyConstraint(
            ["stream_id"],
            ["oidc_logout_ssf_stream.stream_id"],
            name=op.f("fk_oidc_logout_ssf_event_stream_id_oidc_logout_ssf_stream"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_logout_ssf_event")),
    )
    with op.batch_alter_table("oidc_logout_ssf_event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_oidc_logout_ssf_event_stream_state", ["stream_id", "state", "created_at"], unique=False
        )
    _pending_index(NEW_PREDICATE)


def downgrade() -> None:
    _pending_index(OLD_PREDICATE)
    op.drop_table("oidc_logout_ssf_event")
    op.drop_table("oidc_logout_ssf_subject")
    op.drop_table("oidc_logout_ssf_stream")
