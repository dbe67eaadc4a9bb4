"""Small queries several modules share. They take a Session and never commit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..vocabulary import TokenKind
from .models import AuthorizationCode, Grant, OPSession, Token


def session_is_live(db: Session, sid: str | None) -> bool:
    """Whether ``sid`` names an OP session that has not ended (the one liveness rule for
    tokens, codes and refreshes bound to a session)."""
    if not sid:
        return False
    row = db.get(OPSession, sid)
    return row is not None and row.ended_at is None


def token_is_active(db: Session, token: Token) -> bool:
    """Whether ``token`` still works: the one rule the token endpoint (refresh), the userinfo
    endpoint and introspection apply, so RFC 7662 §2.2 ``active`` says what they do.

    Not expired, not revoked (itself or its grant), and bound to a live session, except a
    refresh token of an offline grant (Back-Channel Logout §2.7: "Refresh tokens issued with
    the offline_access property normally SHOULD NOT be revoked"; a termination that must
    end them revokes their grant)."""
    if token.is_expired() or token.is_revoked():
        return False
    if token.kind == TokenKind.REFRESH_TOKEN:
        grant = token.grant
        return grant.offline or not grant.sid or session_is_live(db, grant.sid)
    return token.sid is None or session_is_live(db, token.sid)


def grant_is_revoked(db: Session, grant_id: str) -> bool:
    """Whether the grant is revoked, read from the database (not the session's cached row)."""
    return db.scalar(select(Grant.revoked_at).where(Grant.id == grant_id)) is not None


def claim_code(db: Session, code_id: int, now: dt.datetime) -> bool:
    """Mark the authorization code used if nobody has; True for exactly one caller.

    A compare-and-set (``UPDATE ... WHERE used_at IS NULL``): on PostgreSQL a concurrent
    claimer waits on the row lock and then finds the row changed; on SQLite writers are
    serialized. Runs in the caller's transaction, so a rollback gives the code back."""
    result = db.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.id == code_id, AuthorizationCode.used_at.is_(None))
        .values(used_at=now)
    )
    return rowcount(result) == 1


def retire_refresh_token(db: Session, token_id: int, now: dt.datetime, reason: str) -> bool:
    """Revoke the token if it is not revoked yet; True for exactly one caller (a
    compare-and-set like :func:`claim_code`, in the caller's transaction)."""
    result = db.execute(
        update(Token)
        .where(Token.id == token_id, Token.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    return rowcount(result) == 1


#: PostgreSQL SQLSTATEs of lock contention: deadlock_detected, lock_not_available,
#: serialization_failure.
_PG_LOCK_STATES = frozenset({"40P01", "55P03", "40001"})


def is_lock_contention(exc: BaseException) -> bool:
    """Whether a DBAPI error means "gave up waiting for a lock" (SQLite's busy timeout ran
    out, a PostgreSQL lock timeout or deadlock): retryable, not a bug."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in _PG_LOCK_STATES:
        return True
    message = str(orig).lower() if type(orig).__module__.startswith("sqlite3") else ""
    return "database is locked" in message or "database is busy" in message


def rowcount(result: object) -> int:
    """Rows an UPDATE/DELETE changed (``Result.rowcount`` is not on every result type)."""
    return int(getattr(result, "rowcount", 0) or 0)


def lifetime_cutoffs(settings: Settings, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(idle, absolute) cut-off instants: a session last seen before the first, or created
    before the second, has expired."""
    return (
        now - dt.timedelta(seconds=settings.session_idle_lifetime),
        now - dt.timedelta(seconds=settings.session_absolute_lifetime),
    )


__all__ = [
    "claim_code",
    "grant_is_revoked",
    "is_lock_contention",
    "lifetime_cutoffs",
    "retire_refresh_token",
    "rowcount",
    "session_is_live",
    "token_is_active",
]
