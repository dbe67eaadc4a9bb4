"""Small queries several modules share. They take a Session and never commit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from ..config import Settings
from .models import OPSession, Token


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
    if token.kind == "refresh_token":
        grant = token.grant
        return grant.offline or not grant.sid or session_is_live(db, grant.sid)
    return token.sid is None or session_is_live(db, token.sid)


def lifetime_cutoffs(settings: Settings, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(idle, absolute) cut-off instants: a session last seen before the first, or created
    before the second, has expired."""
    return (now - dt.timedelta(seconds=settings.session_idle_lifetime),
            now - dt.timedelta(seconds=settings.session_absolute_lifetime))
