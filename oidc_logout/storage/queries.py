"""Small queries several modules share. They take a Session and never commit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from ..config import Settings
from .models import OPSession


def session_is_live(db: Session, sid: str | None) -> bool:
    """Whether ``sid`` names an OP session that has not ended (the one liveness rule for
    tokens, codes and refreshes bound to a session)."""
    if not sid:
        return False
    row = db.get(OPSession, sid)
    return row is not None and row.ended_at is None


def lifetime_cutoffs(settings: Settings, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(idle, absolute) cut-off instants: a session last seen before the first, or created
    before the second, has expired."""
    return (now - dt.timedelta(seconds=settings.session_idle_lifetime),
            now - dt.timedelta(seconds=settings.session_absolute_lifetime))
