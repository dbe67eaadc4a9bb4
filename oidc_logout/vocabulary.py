"""The words the OP stores and compares: one ``StrEnum`` per closed set.

Every member's value is the string kept in the database and shown by the admin API and the
CLI, so a member compares equal to its stored text and SQL built from these members (partial
index predicates, the claim statements of the outbox) cannot drift from the Python side.
Framework-free: no SQLAlchemy, Authlib or Flask import.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FINAL_STATES",
    "PUSHED_CHANNELS",
    "AttemptOutcome",
    "Channel",
    "DeliveryState",
    "TargetKind",
    "TokenKind",
    "sql_literal",
]


class DeliveryState(StrEnum):
    """Where an outbox row stands."""

    #: Due at ``next_attempt_at``.
    PENDING = "pending"
    #: Leased to a dispatcher or worker until ``lease_until``.
    IN_FLIGHT = "in_flight"
    #: The RP answered 200/204 (Back-Channel Logout §2.8).
    DELIVERED = "delivered"
    #: Permanent failure: the RP refused the token (§2.8, a 4xx) or the address is not allowed.
    FAILED = "failed"
    #: Retries exhausted (attempts or age): a dead letter an operator may requeue.
    DEAD = "dead"
    #: Front-channel: the browser reported the RP's iframe loaded (Front-Channel Logout §4).
    CONFIRMED = "confirmed"
    #: Front-channel: no report arrived (JavaScript off, page closed, no user agent).
    UNCONFIRMED = "unconfirmed"


#: States a row never leaves by itself (an operator's retry is the only way back).
FINAL_STATES: frozenset[DeliveryState] = frozenset(
    {
        DeliveryState.DELIVERED,
        DeliveryState.FAILED,
        DeliveryState.DEAD,
        DeliveryState.CONFIRMED,
        DeliveryState.UNCONFIRMED,
    }
)


class AttemptOutcome(StrEnum):
    """What one delivery attempt ended with (the per-attempt proof log)."""

    DELIVERED = "delivered"
    #: Transient: another attempt is scheduled.
    RETRY = "retry"
    FAILED = "failed"
    #: Transient, but this was the last attempt the retry policy allows.
    DEAD = "dead"


class Channel(StrEnum):
    """How an RP hears of a termination."""

    #: OpenID Connect Back-Channel Logout 1.0: a signed logout token POSTed server to server.
    BACKCHANNEL = "backchannel"
    #: OpenID Connect Front-Channel Logout 1.0: an iframe in the user's browser.
    FRONTCHANNEL = "frontchannel"
    #: Shared Signals Framework 1.0 push stream: a signed SET POSTed to the receiver's
    #: endpoint (RFC 8935), through the same outbox as back-channel logout.
    SSF_PUSH = "ssf_push"


class TokenKind(StrEnum):
    """RFC 7009 §2.1 ``token_type_hint`` values; also the stored kind of a token row."""

    ACCESS_TOKEN = "access_token"
    REFRESH_TOKEN = "refresh_token"


class TargetKind(StrEnum):
    """What a termination names (the ``target.kind`` of its audit record)."""

    #: One or more OP sessions by sid (a logout ends the hinted and the browser's session).
    SESSIONS = "sessions"
    #: Every live session of a subject.
    SUBJECT = "subject"
    #: The kill switch: every grant and live participation of a client.
    CLIENT = "client"
    #: One grant (refresh-token reuse, a reused authorization code, RFC 7009 revocation).
    GRANT = "grant"
    #: Grants authenticated with an older client secret (a secret rotation).
    CREDENTIAL = "credential"
    #: Sessions past their idle or absolute lifetime.
    EXPIRY = "expiry"
    #: Nothing ended: the audit record of a Shared Signals event not caused by a termination
    #: (a verification event, a credential change), so its push deliveries have a parent.
    SIGNAL = "signal"


#: The channels the outbox delivers server to server (claimed, attempted, retried).
PUSHED_CHANNELS: tuple[Channel, ...] = (Channel.BACKCHANNEL, Channel.SSF_PUSH)


def sql_literal(value: StrEnum) -> str:
    """A member as an SQL string literal, for statement text and index predicates built from
    the vocabulary (the values are plain identifiers, so no escaping is needed; checked)."""
    text = str(value)
    if not text.replace("_", "").isalnum():  # pragma: no cover - guards future members
        raise ValueError(f"{text!r} is not a plain identifier")
    return f"'{text}'"
