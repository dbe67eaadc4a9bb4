"""Small queries several modules share. They take a Session and never commit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..vocabulary import TargetKind, TokenKind
from .models import AuthorizationCode, Cutoff, Grant, OPSession, Token

# The cut-off (issue 17): a termination by subject, client or credential writes one Cutoff row
# in its transaction and does its per-row work (ending sessions, revoking tokens) later in
# chunks. Everything below reads the cut-offs, so a token, code or session of the scope is
# dead the moment the termination commits, whatever the per-row work has reached. Cost: one
# indexed lookup by (value) per check, usually finding nothing.


def cutoffs_for(db: Session, *values: str | None) -> list[Cutoff]:
    """The cut-offs naming any of ``values`` (subjects, client_ids), one indexed query."""
    wanted = sorted({v for v in values if v})
    if not wanted:
        return []
    return list(db.scalars(select(Cutoff).where(Cutoff.value.in_(wanted))))


def session_is_cut_off(session: OPSession, cutoffs: list[Cutoff]) -> bool:
    """Whether a subject cut-off covers the session (created at or before it)."""
    return any(
        c.kind == TargetKind.SUBJECT and c.value == session.subject and session.created_at <= c.before
        for c in cutoffs
    )


def grant_is_cut_off(db: Session, grant: Grant, cutoffs: list[Cutoff]) -> bool:
    """Whether a cut-off kills every token of ``grant``, whatever its session: the client's
    kill switch (grants created at or before it), a secret rotation (grants authenticated with
    an older secret), or a subject termination with ``include_offline`` (the grants of the
    sessions it ends, offline ones included). Session-bound tokens of a subject cut-off die
    through :func:`session_is_live`."""
    for c in cutoffs:
        if c.value == grant.client_id:
            if c.kind == TargetKind.CLIENT and grant.created_at <= c.before:
                return True
            if (
                c.kind == TargetKind.CREDENTIAL
                and c.below_version is not None
                and grant.credential_version < c.below_version
            ):
                return True
        if c.kind == TargetKind.SUBJECT and c.include_offline and c.value == grant.subject and grant.sid:
            session = db.get(OPSession, grant.sid)
            # The sessions that termination ends: created before it and not ended before it.
            if (
                session is not None
                and session.created_at <= c.before
                and (session.ended_at is None or session.ended_at >= c.before)
            ):
                return True
    return False


def host_token_is_cut_off(
    cutoffs: list[Cutoff], subject: str | None, client_id: str, issued_at: dt.datetime
) -> bool:
    """Extension mode: whether a cut-off kills a host access token (a row of the host's
    ``OAuth2TokenMixin`` model) of ``subject`` (None for ``client_credentials``) and
    ``client_id``, issued at ``issued_at``. A subject or client termination revokes the host's
    rows by ``UPDATE`` in its transaction; this catches the row that UPDATE could not see (a
    token request committing concurrently, with a row issued before the cut-off). The mixin
    keeps whole seconds, so ``issued_at`` may read up to a second early: a token issued in the
    cut-off's second is treated as issued before it (never the other way round)."""
    for c in cutoffs:
        if issued_at > c.before:
            continue
        if c.kind == TargetKind.CLIENT and c.value == client_id:
            return True
        if c.kind == TargetKind.SUBJECT and subject is not None and c.value == subject:
            return True
    return False


def session_is_live(db: Session, sid: str | None, cutoffs: list[Cutoff] | None = None) -> bool:
    """Whether ``sid`` names an OP session that has not ended and no subject cut-off covers
    (the one liveness rule for tokens, codes, refreshes and browser cookies bound to a
    session). ``cutoffs``: already looked up for the session's subject (saves the query)."""
    if not sid:
        return False
    row = db.get(OPSession, sid)
    if row is None or row.ended_at is not None:
        return False
    return not session_is_cut_off(row, cutoffs_for(db, row.subject) if cutoffs is None else cutoffs)


def token_is_active(db: Session, token: Token) -> bool:
    """Whether ``token`` still works: the one rule the token endpoint (refresh), the userinfo
    and admin bearer endpoints and introspection apply, so RFC 7662 §2.2 ``active`` says what
    they do.

    Not expired, not revoked (itself or its grant), not under a cut-off, and bound to a live
    session, except a refresh token of an offline grant (Back-Channel Logout §2.7: "Refresh
    tokens issued with the offline_access property normally SHOULD NOT be revoked"; a
    termination that must end them revokes their grant)."""
    if token.is_expired() or token.is_revoked():
        return False
    grant = token.grant
    cutoffs = cutoffs_for(db, grant.subject, grant.client_id)
    if cutoffs and grant_is_cut_off(db, grant, cutoffs):
        return False
    if token.kind == TokenKind.REFRESH_TOKEN:
        return grant.offline or not grant.sid or session_is_live(db, grant.sid, cutoffs)
    return token.sid is None or session_is_live(db, token.sid, cutoffs)


def code_is_usable(db: Session, code: AuthorizationCode) -> bool:
    """Whether an (unused, unexpired) authorization code may still be exchanged: its session
    is live and no client kill switch was pulled after it was issued."""
    cutoffs = cutoffs_for(db, code.subject, code.client_id)
    if any(
        c.kind == TargetKind.CLIENT and c.value == code.client_id and code.created_at <= c.before
        for c in cutoffs
    ):
        return False
    return session_is_live(db, code.sid, cutoffs)


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
    "code_is_usable",
    "cutoffs_for",
    "grant_is_cut_off",
    "grant_is_revoked",
    "host_token_is_cut_off",
    "is_lock_contention",
    "lifetime_cutoffs",
    "retire_refresh_token",
    "rowcount",
    "session_is_cut_off",
    "session_is_live",
    "token_is_active",
]
