"""Starting an OP session when the host has authenticated an End-User.

The host's login (password, MFA, passkeys, upstream federation) decides *who* signed in and
*how*; this module records it so that ``sid``, ``auth_time``, ``amr`` and ``acr`` reach the ID
tokens (Core 1.0 §2) and the session can be terminated everywhere later. Framework-free: the
Flask adapter sets the returned cookie value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from .errors import InvalidRequest
from .storage.base import utcnow
from .storage.models import OPSession
from .termination import by_sid, terminate
from .tokens import new_id, new_token, token_hash

__all__ = ["SignIn", "start_session"]

#: auth_time may lie this far in the future (clock skew between the host's login and us).
MAX_CLOCK_SKEW = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class SignIn:
    """A started (or renewed) OP session and what the adapter must do with it."""

    session: OPSession
    #: The new cookie value (only its hash is stored). Always fresh: a sign-in never keeps a
    #: cookie value an attacker might have planted (session fixation, RFC 9700 §4.1.x spirit).
    cookie: str
    #: The termination that ended the browser's earlier session of another user: hand it to
    #: :meth:`~oidc_logout.provider.Provider.dispatch` after commit so its RPs hear of it.
    replaced_termination_id: str | None


def start_session(
    db: Session,
    subject: str,
    *,
    current: OPSession | None = None,
    auth_time: dt.datetime | None = None,
    amr: Sequence[str] | None = None,
    acr: str | None = None,
    now: dt.datetime | None = None,
) -> SignIn:
    """Record that ``subject`` authenticated (in the caller's transaction; never commits).

    ``current`` is the live OP session the user agent already holds. The same End-User
    signing in again keeps that session (same ``sid``: the RPs' sessions stay bound to it) with
    the new authentication time and methods; another End-User ends it first, through the one
    termination path, so nothing of the earlier user stays reachable from this browser.
    """
    now = now or utcnow()
    _check(subject, auth_time, amr, acr, now)
    auth_at = auth_time or now
    methods = list(amr) if amr else None
    if current is not None and current.ended_at is None and current.subject == subject:
        cookie = new_token()
        current.cookie_hash = token_hash(cookie)
        current.auth_time = auth_at
        current.amr = methods
        current.acr = acr
        current.last_seen_at = now
        return SignIn(current, cookie, None)
    replaced: str | None = None
    if current is not None and current.ended_at is None:
        term = terminate(
            db,
            by_sid(current.sid),
            reason="another End-User signed in",
            initiator="sign-in",
            browser_present=False,
            now=now,
        )
        replaced = term.id
    cookie = new_token()
    # Core 1.0 / Back-Channel §2.1: sid is an opaque, unguessable identifier (>= 128 bits).
    row = OPSession(
        sid=new_id(24),
        cookie_hash=token_hash(cookie),
        subject=subject,
        auth_time=auth_at,
        amr=methods,
        acr=acr,
        created_at=now,
        last_seen_at=now,
    )
    db.add(row)
    db.flush()
    return SignIn(row, cookie, replaced)


def _check(
    subject: str, auth_time: dt.datetime | None, amr: Sequence[str] | None, acr: str | None, now: dt.datetime
) -> None:
    # Core 1.0 §2: sub is "a locally unique and never reassigned identifier ... It MUST NOT
    # exceed 255 ASCII characters in length"; the session column holds 255.
    if not isinstance(subject, str) or not subject or len(subject) > 255 or not subject.isprintable():
        raise InvalidRequest("subject must be 1 to 255 printable characters")
    if auth_time is not None:
        if auth_time.tzinfo is None:
            raise InvalidRequest("auth_time must be timezone-aware")
        if auth_time > now + MAX_CLOCK_SKEW:
            raise InvalidRequest("auth_time lies in the future")
    # RFC 8176 §1: amr is an array of case-sensitive strings.
    if amr is not None and (
        isinstance(amr, str)
        or not all(isinstance(m, str) and 0 < len(m) <= 64 and m.isprintable() for m in amr)
        or len(amr) > 16
    ):
        raise InvalidRequest("amr must be a list of short method names (RFC 8176)")
    if acr is not None and (not isinstance(acr, str) or not acr or len(acr) > 255 or not acr.isprintable()):
        raise InvalidRequest("acr must be 1 to 255 printable characters")
