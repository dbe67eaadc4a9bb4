"""OAuth 2.0 Global Token Revocation (draft-parecki-oauth-global-token-revocation-05):
"revoke everything of this subject", sent by a security tool or an upstream IdP.

The request (§3.2) is a JSON object with one member, ``sub_id``, an RFC 9493 subject
identifier. This OP understands ``opaque`` (the End-User's ``sub``), ``iss_sub`` (this OP as
``iss``) and ``email`` (when the user directory can map an address to a subject: a
``subject_for_email(email)`` method). The revocation runs through the one termination path
(:func:`oidc_logout.termination.terminate`, by subject): every live OP session ends, every
refresh and access token of the subject is revoked, and every RP hears of it - back-channel
logout, SSF session-revoked (front-channel needs a browser: recorded as not confirmable).

Answers (§3.4): 204 when revocation has begun; 400 for a malformed request or an unsupported
format; 401/403 for a missing/invalid token or one without the scope; 404 when the subject is
not known here (no such user, no session, no grant).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..errors import InvalidRequest, NotFound
from ..protocols import UserDirectory
from ..storage.base import utcnow
from ..storage.models import OPSession, Termination
from ..termination import by_subject, terminate
from ..token_stores import subject_has_tokens
from . import events as ssf_events
from .subjects import validate

__all__ = ["INITIATOR", "parse_request", "resolve_subject", "revoke_subject"]

INITIATOR = "global_token_revocation"


def parse_request(body: Any) -> dict[str, Any]:
    """The validated ``sub_id`` of a revocation request (§3.2)."""
    if not isinstance(body, dict) or "sub_id" not in body:
        raise InvalidRequest("the request body must be a JSON object with a 'sub_id' member")
    return validate(body["sub_id"], what="sub_id", allow_complex=False)


def resolve_subject(sub_id: dict[str, Any], settings: Settings, users: UserDirectory | None) -> str:
    """The End-User ``sub`` a subject identifier names here; 400 for a format this OP cannot
    resolve, 404 for one naming another issuer's user."""
    fmt = sub_id["format"]
    if fmt == "opaque":
        return str(sub_id["id"])
    if fmt == "iss_sub":
        if sub_id["iss"].rstrip("/") != settings.issuer.rstrip("/"):
            raise NotFound("the subject's issuer is not this authorization server")
        return str(sub_id["sub"])
    if fmt == "email":
        lookup: Callable[[str], str | None] | None = getattr(users, "subject_for_email", None)
        if lookup is None:
            raise InvalidRequest("the email format is not supported by this server's user directory")
        sub = lookup(sub_id["email"])
        if not sub:
            raise NotFound("no user with that email address")
        return str(sub)
    # §3.4 400: "an unrecognized or unsupported type of subject identifier".
    raise InvalidRequest(f"unsupported subject identifier format '{fmt}'")


def _known(db: Session, sub: str, users: UserDirectory | None) -> tuple[bool, bool | None]:
    """(the subject is known here at all, whether the directory still has it: None without a
    directory, as in extension mode, where the host's users are not ours to ask)."""
    exists = bool(users.exists(sub)) if users is not None else None
    if exists:
        return True, True
    has_rows = db.scalar(
        select(OPSession.sid).where(OPSession.subject == sub).limit(1)
    ) is not None or subject_has_tokens(db, sub)
    return has_rows, exists


def revoke_subject(
    session_factory: Callable[[], Any],
    settings: Settings,
    users: UserDirectory | None,
    client_id: str,
    body: Any,
    now: dt.datetime | None = None,
) -> str:
    """Run a Global Token Revocation requested by ``client_id``; returns the termination id
    (the caller hands it to delivery after this commits)."""
    sub_id = parse_request(body)
    sub = resolve_subject(sub_id, settings, users)
    now = now or utcnow()
    with session_factory.begin() as db:  # type: ignore[attr-defined]
        known, exists = _known(db, sub, users)
        if not known:
            # §3.4: "404 User Not Found: The user indicated by the subject identifier was not found."
            raise NotFound("the user indicated by the subject identifier was not found")
        initiator = f"{INITIATOR}:{client_id}"
        reason = "global token revocation"
        # §3.3: "MUST revoke all active refresh tokens", "SHOULD invalidate all access tokens",
        # "MUST re-authenticate the user before issuing new access tokens or refresh tokens":
        # ending every session forces a new sign-in; offline grants go too, those of sessions
        # that ended earlier included (the termination's grant walk after its sessions).
        term: Termination = terminate(
            db, by_subject(sub), reason=reason, initiator=initiator, include_offline=True, now=now
        )
        if exists is False:
            # RISC account-disabled: the directory no longer has this account.
            ssf_events.record_account_disabled(
                db,
                sub=sub,
                reason="the account no longer exists",
                initiator=initiator,
                now=now,
                termination_id=term.id,
            )
        db.flush()
        return term.id
