"""Typed SQLAlchemy 2.x models of the OP: clients, grants, tokens (hashes only), OP sessions,
session participants, terminations and the delivery outbox.

Tokens and client secrets are stored only as SHA-256 hashes: a copy of the database hands an
attacker nothing that works at the token or revocation endpoints.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Text, UniqueConstraint, false
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..vocabulary import (
    FINAL_STATES,
    PUSHED_CHANNELS,
    AttemptOutcome,
    Channel,
    DeliveryState,
    TargetKind,
    TokenKind,
    sql_literal,
)
from .base import Base, intpk, str40, str64, str255, text, utcnow

#: The rows a delivery claim looks for first (partial index ``ix_delivery_pending_due``):
#: pending rows of the channels the outbox POSTs (back-channel logout, SSF push).
PENDING_BACKCHANNEL_PREDICATE = (
    f"state = {sql_literal(DeliveryState.PENDING)} AND channel IN "
    f"({', '.join(sql_literal(c) for c in PUSHED_CHANNELS)})"
)

# Short names kept for the delivery engine's statements.
PENDING = DeliveryState.PENDING
IN_FLIGHT = DeliveryState.IN_FLIGHT
DELIVERED = DeliveryState.DELIVERED
FAILED = DeliveryState.FAILED
DEAD = DeliveryState.DEAD
CONFIRMED = DeliveryState.CONFIRMED
UNCONFIRMED = DeliveryState.UNCONFIRMED
BACKCHANNEL = Channel.BACKCHANNEL
FRONTCHANNEL = Channel.FRONTCHANNEL


class Client(Base):
    """A registered client with its OIDC and logout metadata (RFC 7591, Back-/Front-Channel)."""

    __tablename__ = "oidc_logout_client"

    client_id: Mapped[str64] = mapped_column(primary_key=True)
    #: SHA-256 hex of the current secret; None for public clients.
    client_secret_hash: Mapped[str64 | None]
    #: Bumped on every secret rotation; grants remember the version that authenticated them.
    secret_version: Mapped[int] = mapped_column(Integer, default=1)
    secret_rotated_at: Mapped[dt.datetime | None]
    client_name: Mapped[str255 | None]
    token_endpoint_auth_method: Mapped[str40] = mapped_column(default="client_secret_basic")
    redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    grant_types: Mapped[list[str]] = mapped_column(default=list)
    response_types: Mapped[list[str]] = mapped_column(default=list)
    scope: Mapped[str] = mapped_column(Text, default="")
    id_token_signed_response_alg: Mapped[str40] = mapped_column(default="RS256")
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    backchannel_logout_uri: Mapped[text | None]
    backchannel_logout_session_required: Mapped[bool] = mapped_column(Boolean, default=False)
    frontchannel_logout_uri: Mapped[text | None]
    frontchannel_logout_session_required: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Remaining RFC 7591 metadata, as registered.
    extra_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: Provisioned by the operator (configuration, ``--clients``): a first-party client whose
    #: authorization requests need no consent page. Clients that registered themselves
    #: (RFC 7591) are never trusted; rows from before migration 0004 are untrusted until the
    #: operator loads them again.
    trusted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class OPSession(Base):
    """An OP (browser) session; ``sid`` is the Core 1.0 / Back-Channel Logout session id."""

    __tablename__ = "oidc_logout_op_session"
    #: Keyset order of a chunked termination's walk over a subject's sessions (chunks.py).
    __table_args__ = (Index("ix_oidc_logout_op_session_subject_sid", "subject", "sid"),)

    sid: Mapped[str64] = mapped_column(primary_key=True)
    #: SHA-256 of the browser cookie value. The cookie is NOT the sid: the sid is shown to
    #: every RP (logout tokens, front-channel URLs), so it must not work as a credential.
    cookie_hash: Mapped[str64 | None] = mapped_column(unique=True)
    subject: Mapped[str255] = mapped_column(index=True)
    auth_time: Mapped[dt.datetime]
    #: Core 1.0 §2: how the End-User authenticated (``amr``, RFC 8176 values) and the
    #: Authentication Context Class Reference (``acr``) they reach ID tokens with.
    amr: Mapped[list[str] | None]
    acr: Mapped[str255 | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    end_reason: Mapped[text | None]
    termination_id: Mapped[str40 | None] = mapped_column(ForeignKey("oidc_logout_termination.id"))

    participants: Mapped[list[SessionParticipant]] = relationship(back_populates="session")


class SessionParticipant(Base):
    """A client that received an ID token within an OP session (who must hear of its end)."""

    __tablename__ = "oidc_logout_session_participant"
    __table_args__ = (
        UniqueConstraint("sid", "client_id"),
        # Keyset order of a chunked client kill's walk over its participations (chunks.py).
        Index("ix_oidc_logout_session_participant_client_sid", "client_id", "sid"),
    )

    id: Mapped[intpk]
    sid: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_op_session.sid"), index=True)
    client_id: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_client.client_id"), index=True)
    first_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]

    session: Mapped[OPSession] = relationship(back_populates="participants")


class AuthorizationCode(Base):
    """A one-time authorization code (hash only), with what the token endpoint needs."""

    __tablename__ = "oidc_logout_authorization_code"

    id: Mapped[intpk]
    code_hash: Mapped[str64] = mapped_column(unique=True)
    client_id: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_client.client_id"))
    redirect_uri: Mapped[text]
    scope: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str255]
    sid: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_op_session.sid"))
    nonce: Mapped[text | None]
    auth_time: Mapped[dt.datetime]
    code_challenge: Mapped[str255 | None]
    code_challenge_method: Mapped[str40 | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    #: The grant the code was exchanged for: a second use revokes it (RFC 6749 §4.1.2).
    grant_id: Mapped[str40 | None]

    op_session: Mapped[OPSession] = relationship()

    # The authorization-code protocol Authlib's grants expect (duck-typed).
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> str | None:
        return self.op_session.acr

    def get_amr(self) -> list[str] | None:
        return list(self.op_session.amr) if self.op_session.amr else None

    def get_code_challenge(self) -> str | None:
        return self.code_challenge

    def get_code_challenge_method(self) -> str | None:
        return self.code_challenge_method


class Grant(Base):
    """One authorization: the family of access and refresh tokens it produces."""

    __tablename__ = "oidc_logout_grant"
    #: Keyset order of a chunked client kill / secret rotation over its grants (chunks.py).
    __table_args__ = (
        Index("ix_oidc_logout_grant_client_id_id", "client_id", "id"),
        #: The keyset walk of a termination by subject over its grants (termination.py).
        Index("ix_oidc_logout_grant_subject_id", "subject", "id"),
    )

    id: Mapped[str40] = mapped_column(primary_key=True)
    client_id: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_client.client_id"), index=True)
    grant_type: Mapped[str40]
    subject: Mapped[str255 | None] = mapped_column(index=True)
    sid: Mapped[str64 | None] = mapped_column(ForeignKey("oidc_logout_op_session.sid"), index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    #: Back-Channel Logout §2.7: offline_access refresh tokens normally outlive the session.
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The client secret version that authenticated this grant (secret rotation ends older ones).
    credential_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    revoked_reason: Mapped[text | None]


class Token(Base):
    """An access or refresh token, stored as the SHA-256 hash of its value."""

    __tablename__ = "oidc_logout_token"
    __table_args__ = (Index("ix_oidc_logout_token_grant_kind", "grant_id", "kind"),)

    id: Mapped[intpk]
    token_hash: Mapped[str64] = mapped_column(unique=True)
    kind: Mapped[TokenKind]
    grant_id: Mapped[str40] = mapped_column(ForeignKey("oidc_logout_grant.id"))
    client_id: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_client.client_id"), index=True)
    subject: Mapped[str255 | None] = mapped_column(index=True)
    sid: Mapped[str64 | None] = mapped_column(index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    revoked_reason: Mapped[text | None]

    grant: Mapped[Grant] = relationship(lazy="joined")

    # The token protocol Authlib's endpoints expect (duck-typed, no Authlib import).
    def check_client(self, client: object) -> bool:
        return getattr(client, "client_id", None) == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_at(self) -> int:
        return int(self.expires_at.timestamp()) if self.expires_at else 0

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or self.grant.revoked_at is not None


class Termination(Base):
    """The audit record of one termination: what was ended, why, by whom."""

    __tablename__ = "oidc_logout_termination"
    #: The chunk runners' look-up of running terminations (chunks.py): tiny whatever the history.
    __table_args__ = (
        Index(
            "ix_oidc_logout_termination_running",
            "created_at",
            postgresql_where=sql_text("state = 'running'"),
            sqlite_where=sql_text("state = 'running'"),
        ),
        #: A grant termination's look-up of the one that revoked its grant first (termination.py).
        Index("ix_oidc_logout_termination_target", "target_kind", "target_value"),
    )

    id: Mapped[str40] = mapped_column(primary_key=True)
    target_kind: Mapped[TargetKind]
    target_value: Mapped[str255]
    reason: Mapped[text]
    initiator: Mapped[str255]
    include_offline: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sessions_ended: Mapped[int] = mapped_column(Integer, default=0)
    tokens_revoked: Mapped[int] = mapped_column(Integer, default=0)
    # Chunked terminations (scale): a subject, client or credential termination too large for
    # one transaction records a Cutoff at commit and does its per-row work afterwards in
    # chunks (oidc_logout/chunks.py); these say how far it got, so a crash resumes there.
    #: ``complete`` (every row done) or ``running`` (chunks left).
    state: Mapped[str40] = mapped_column(default="complete", server_default="complete")
    #: Which walk the next chunk continues (chunks.PHASES of the target kind) and after which key.
    progress_phase: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress_cursor: Mapped[str255 | None]
    chunks_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Outbox rows written so far (all chunks).
    deliveries_written: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="termination", order_by="Delivery.id")


class Delivery(Base):
    """One RP notification to deliver (the transactional outbox row)."""

    __tablename__ = "oidc_logout_delivery"
    __table_args__ = (
        UniqueConstraint("termination_id", "channel", "client_id", "sid"),
        Index("ix_oidc_logout_delivery_due", "state", "next_attempt_at"),
        # The claim query's exact predicate and order (outbox.claim_due): an ordered LIMIT
        # over due back-channel rows reads this index instead of sorting the table.
        Index(
            "ix_oidc_logout_delivery_pending_due",
            "next_attempt_at",
            "id",
            postgresql_where=sql_text(PENDING_BACKCHANNEL_PREDICATE),
            sqlite_where=sql_text(PENDING_BACKCHANNEL_PREDICATE),
        ),
    )

    id: Mapped[intpk]
    termination_id: Mapped[str40] = mapped_column(ForeignKey("oidc_logout_termination.id"), index=True)
    channel: Mapped[Channel]
    client_id: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_client.client_id"))
    sid: Mapped[str64 | None]
    subject: Mapped[str255 | None]
    target_uri: Mapped[text]
    state: Mapped[DeliveryState] = mapped_column(default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str64 | None]
    lease_until: Mapped[dt.datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[text | None]
    completed_at: Mapped[dt.datetime | None]

    termination: Mapped[Termination] = relationship(back_populates="deliveries")
    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.id"
    )


class DeliveryAttempt(Base):
    """Every attempt at a delivery: proof of what the RP answered and when."""

    __tablename__ = "oidc_logout_delivery_attempt"

    id: Mapped[intpk]
    delivery_id: Mapped[int] = mapped_column(ForeignKey("oidc_logout_delivery.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None]
    outcome: Mapped[AttemptOutcome]
    error: Mapped[text | None]
    jti: Mapped[str64 | None]
    worker: Mapped[str64 | None]

    delivery: Mapped[Delivery] = relationship(back_populates="attempt_log")


class Consent(Base):
    """What an End-User approved for a client on the consent page (Core 1.0 §3.1.2.4): the
    union of the scopes approved so far. Kept server-side; a later request asking for no more
    than this needs no page (unless ``prompt=consent``)."""

    __tablename__ = "oidc_logout_consent"
    __table_args__ = (UniqueConstraint("subject", "client_id"),)

    id: Mapped[intpk]
    subject: Mapped[str255]
    client_id: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_client.client_id"), index=True)
    #: Space-separated, sorted; may be empty (the client was approved for no scope at all).
    scope: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RateEvent(Base):
    """One counted event of a rate limit (a failed sign-in, a registration), keyed by the
    SHA-256 of what it counts against (``login:account:<name>``, ``register:addr:<ip>``), so a
    password typed into the username field is never stored. Shared by every OP instance."""

    __tablename__ = "oidc_logout_rate_event"
    __table_args__ = (Index("ix_oidc_logout_rate_event_key_at", "key_hash", "at"),)

    id: Mapped[intpk]
    key_hash: Mapped[str64]
    at: Mapped[dt.datetime] = mapped_column(index=True)


class SigningKey(Base):
    """A JWS signing key (private JWK, managed with jwcrypto), shared by every OP instance."""

    __tablename__ = "oidc_logout_signing_key"

    kid: Mapped[str64] = mapped_column(primary_key=True)
    alg: Mapped[str40]
    private_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: Retired keys stay published (to verify old ID tokens) but no longer sign. May lie in
    #: the future: the instant a rotation's successor key takes over.
    retired_at: Mapped[dt.datetime | None]
    #: When the key starts signing (None: since it was created). Until then it is only
    #: published in the JWKS, so RPs can learn it before they see a token it signed.
    activates_at: Mapped[dt.datetime | None]


class SSFStream(Base):
    """A Shared Signals Framework 1.0 event stream (SSF §8.1.1): owned by the OAuth client
    that created it, which alone may see or change it."""

    __tablename__ = "oidc_logout_ssf_stream"

    stream_id: Mapped[str40] = mapped_column(primary_key=True)
    client_id: Mapped[str64] = mapped_column(ForeignKey("oidc_logout_client.client_id"), index=True)
    #: SSF §8.1.1 ``iss``: the transmitter's issuer when the stream was created (its SETs' ``iss``).
    iss: Mapped[str255]
    #: SSF §8.1.1 ``aud`` (Transmitter-Supplied, never updated).
    aud: Mapped[str255]
    #: ``urn:ietf:rfc:8935`` (push) or ``urn:ietf:rfc:8936`` (poll).
    delivery_method: Mapped[str40]
    #: Push: the receiver's endpoint. Poll: None (the transmitter's poll URL is derived).
    endpoint_url: Mapped[text | None]
    #: SSF §6.1.1: sent verbatim with every push (a credential of the receiver: never logged).
    authorization_header: Mapped[text | None]
    events_requested: Mapped[list[str]] = mapped_column(default=list)
    description: Mapped[text | None]
    #: The RFC 9493 format of event subjects on this stream (an extension member).
    subject_format: Mapped[str40] = mapped_column(default="iss_sub")
    #: SSF §8.1.2: enabled, paused or disabled.
    status: Mapped[str40] = mapped_column(default="enabled")
    status_reason: Mapped[text | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_verification_at: Mapped[dt.datetime | None]


class SSFSubject(Base):
    """A subject a receiver added to or removed from a stream (SSF §8.1.3)."""

    __tablename__ = "oidc_logout_ssf_subject"
    __table_args__ = (UniqueConstraint("stream_id", "subject_key"),)

    id: Mapped[intpk]
    stream_id: Mapped[str40] = mapped_column(ForeignKey("oidc_logout_ssf_stream.stream_id"), index=True)
    #: SHA-256 of the subject's canonical JSON.
    subject_key: Mapped[str64]
    subject: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: ``added`` or ``removed``.
    action: Mapped[str40]
    verified: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SSFEvent(Base):
    """One Security Event Token for one stream (RFC 8417): its claims are fixed when the event
    happens (so every retransmission is the same SET, same ``jti``); it is signed when sent.

    Push streams: a ``delivery`` row (channel ``ssf_push``, ``sid`` = this id) carries it
    through the outbox; ``held`` while the stream is paused. Poll streams (RFC 8936):
    ``queued`` until returned by a poll, then ``sent`` until acknowledged (``acked``)."""

    __tablename__ = "oidc_logout_ssf_event"
    __table_args__ = (Index("ix_oidc_logout_ssf_event_stream_state", "stream_id", "state", "created_at"),)

    id: Mapped[str40] = mapped_column(primary_key=True)
    stream_id: Mapped[str40] = mapped_column(ForeignKey("oidc_logout_ssf_stream.stream_id"))
    termination_id: Mapped[str40 | None]
    event_type: Mapped[str255]
    claims: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str40]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]
    acked_at: Mapped[dt.datetime | None]
    #: RFC 8936 §2.4.4: the receiver's ``setErrs`` entry for this SET.
    error: Mapped[text | None]


class WorkerHeartbeat(Base):
    """A delivery worker's last sign of life (``oidc-logout worker`` writes it every
    ``worker_heartbeat_interval`` seconds): ``/readyz`` in workers mode needs a recent one."""

    __tablename__ = "oidc_logout_worker_heartbeat"

    #: The worker's lease owner name (host:pid:random, unique per process start).
    owner: Mapped[str64] = mapped_column(primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class HostTokenSession(Base):
    """Extension mode (a host's own Authlib server and token model): which OP session a host
    authorization code or token row belongs to, so that ending the session revokes the
    host's tokens (Back-Channel Logout §2.7) and ID tokens carry ``sid`` (§2.1). A side table
    owned by the extension: the host's tables are not changed. ``kind`` is ``code`` (``ref``:
    SHA-256 hex of the code, short-lived) or ``token`` (``ref``: the host row's primary key)."""

    __tablename__ = "oidc_logout_token_session"
    __table_args__ = (UniqueConstraint("kind", "ref"),)

    id: Mapped[intpk]
    kind: Mapped[str40]
    ref: Mapped[str64]
    sid: Mapped[str64] = mapped_column(index=True)
    client_id: Mapped[str255]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Cutoff(Base):
    """ "Every token of this scope issued at or before ``before`` is dead": written in O(1) by a
    termination by subject, client or credential, so its whole scope stops working the moment
    it commits, before its per-row work (chunks) has run. Read by the one liveness predicate
    (:mod:`oidc_logout.storage.queries`).

    ``kind`` is the termination's target kind (subject, client, credential) and ``value`` the
    subject or client_id; a credential cut-off kills grants with ``credential_version`` below
    ``below_version``; a subject cut-off with ``include_offline`` kills the offline grants of
    the sessions it ends too."""

    __tablename__ = "oidc_logout_cutoff"
    __table_args__ = (Index("ix_oidc_logout_cutoff_value_kind", "value", "kind"),)

    id: Mapped[intpk]
    kind: Mapped[TargetKind]
    value: Mapped[str255]
    before: Mapped[dt.datetime]
    below_version: Mapped[int | None] = mapped_column(Integer)
    include_offline: Mapped[bool] = mapped_column(Boolean, default=False)
    termination_id: Mapped[str40] = mapped_column(ForeignKey("oidc_logout_termination.id"), index=True)


__all__ = [
    "FINAL_STATES",
    "PENDING_BACKCHANNEL_PREDICATE",
    "AuthorizationCode",
    "Client",
    "Consent",
    "Cutoff",
    "Delivery",
    "DeliveryAttempt",
    "Grant",
    "HostTokenSession",
    "OPSession",
    "RateEvent",
    "SSFEvent",
    "SSFStream",
    "SSFSubject",
    "SessionParticipant",
    "SigningKey",
    "Termination",
    "Token",
    "WorkerHeartbeat",
]
