"""The OP session cookie: an opaque random value whose hash points at the server-side
session row. A session ended server-side is refused whatever the cookie says."""

from __future__ import annotations

import secrets

from flask import request, session
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from ..config import Settings
from ..storage.base import utcnow
from ..storage.models import OPSession
from ..storage.queries import lifetime_cutoffs, session_is_live
from ..tokens import same_secret, token_hash


def current_op_session(db: Session, settings: Settings) -> OPSession | None:
    value = request.cookies.get(settings.session_cookie_name)
    if not value or len(value) > 128:
        return None
    row = db.scalar(select(OPSession).where(OPSession.cookie_hash == token_hash(value)))
    if row is None or not session_is_live(db, row.sid):  # ended, or under a subject cut-off
        return None
    idle_cut, absolute_cut = lifetime_cutoffs(settings, utcnow())
    # Expired but not yet swept: refuse it now; the sweep notifies the RPs.
    if row.last_seen_at < idle_cut or row.created_at < absolute_cut:
        return None
    return row


def set_cookie(response: Response, settings: Settings, value: str) -> None:
    response.set_cookie(
        settings.session_cookie_name,
        value,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure or settings.issuer.startswith("https:"),
        path="/",
    )


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        settings.session_cookie_name,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.is_secure or settings.issuer.startswith("https:"),
    )


def csrf_token() -> str:
    """A per-browser CSRF token kept in Flask's signed session cookie (synchronizer token)."""
    token = session.get("_csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        session["_csrf"] = token
    return str(token)


def check_csrf() -> bool:
    expected = session.get("_csrf")
    return bool(expected) and same_secret(request.form.get("csrf_token", ""), str(expected))


__all__ = [
    "check_csrf",
    "clear_cookie",
    "csrf_token",
    "current_op_session",
    "set_cookie",
]
