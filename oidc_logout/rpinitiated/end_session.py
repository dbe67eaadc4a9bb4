"""RP-Initiated Logout 1.0 on Authlib's ``EndSessionEndpoint`` lifecycle.

``validate_request`` decides what the request may do (which sessions, whether to ask the
End-User, where to redirect); ``create_response`` runs :meth:`end_session`, which is **one**
termination of every session the logout ends (the hinted one and the browser's own), in one
transaction with one bounded wait; the typed :class:`LogoutResult` tells the adapter what to
render. No framework import: the browser's OP session comes from the server context.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.rpinitiated import EndSessionEndpoint as _EndSessionEndpoint
from authlib.oidc.rpinitiated import EndSessionRequest
from sqlalchemy import select

from ..context import ServerContext
from ..frontchannel.page import Frame, iframe_url
from ..storage.models import OPSession, SessionParticipant
from ..termination import by_sessions

__all__ = ["PARAMETERS", "EndSessionEndpoint", "LogoutRequest", "LogoutResult"]

#: rpinitiated §2: the request parameters (GET query or POST form), in the order a
#: confirmation page carries them on.
PARAMETERS = ("id_token_hint", "logout_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales")
#: Longest value accepted for any of them (an ID token with many claims stays far below).
MAX_PARAMETER_LENGTH = 8192


@dataclass(frozen=True)
class LogoutResult:
    """What one RP-initiated logout did, for the adapter to render."""

    #: The termination that ended the sessions (None: there was no live session to end).
    termination_id: str | None
    #: Front-Channel Logout §4: one iframe per RP of the ended sessions registered for it.
    frames: tuple[Frame, ...]
    #: rpinitiated §3: the validated post-logout redirect (with ``state``), if any.
    redirect_uri: str | None
    #: The browser's own OP session ended, so its cookie must be cleared (and only then).
    browser_session_ended: bool
    #: Every back-channel delivery reached a final state within the wait bound.
    settled: bool


@dataclass
class LogoutRequest(EndSessionRequest):  # type: ignore[misc]
    """A validated end_session request and the sessions it may end."""

    #: The live OP session the hint names (its client took part in it), if any.
    hinted_sid: str | None = None
    #: The browser's live OP session, if any.
    browser_sid: str | None = None
    #: The hint named a session that is over, or none its client took part in: ask the
    #: End-User (rpinitiated §2 "treat the logout request as suspect", §6).
    suspect_hint: bool = False
    #: Set by the adapter once the End-User confirmed the logout (a CSRF-checked form).
    confirmed: bool = False
    result: LogoutResult | None = None
    #: The browser's session belongs to the hint's subject (so it ends with the hinted one).
    browser_same_user: bool = False

    @property
    def needs_confirmation(self) -> bool:
        # rpinitiated §6: "Logout requests without a valid id_token_hint value are a potential
        # means of denial of service; therefore, OPs should obtain explicit confirmation from
        # the End-User before acting upon them." A hint whose session is over counts as none.
        return self.hinted_sid is None

    def sessions_to_end(self) -> list[str]:
        """The hinted session, plus the browser's when it is the same user's; without a usable
        hint, the browser's session once the End-User confirmed."""
        sids: list[str] = []
        if self.hinted_sid is not None:
            sids.append(self.hinted_sid)
            if self.browser_sid is not None and self.browser_same_user:
                sids.append(self.browser_sid)
        elif self.confirmed and self.browser_sid is not None:
            sids.append(self.browser_sid)
        return list(dict.fromkeys(sids))


class EndSessionEndpoint(_EndSessionEndpoint):  # type: ignore[misc]
    """Authlib's endpoint made strict: errors stop the logout (no redirect, nothing ended),
    logout tokens are not ID tokens, and the logout is one termination."""

    server: ServerContext

    def get_server_jwks(self) -> dict[str, Any]:
        return self.server.provider.keyring.public_jwks()

    def get_algorithms(self) -> list[str]:
        return self.server.provider.keyring.algs()

    def validate_request(self, request: Any) -> LogoutRequest:
        data = request.payload.data
        for name in PARAMETERS:
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_PARAMETER_LENGTH):
                raise InvalidRequestError(f"'{name}' is malformed")
        client_id = data.get("client_id")
        if client_id and self.server.query_client(client_id) is None:
            raise InvalidRequestError("unknown 'client_id'")
        hint = data.get("id_token_hint")
        if hint and _is_logout_token(hint):
            # Back-Channel Logout §4.1: logout tokens carry typ logout+jwt and an events claim
            # precisely so that they cannot be confused with ID tokens; one is no id_token_hint.
            raise InvalidRequestError("'id_token_hint' is a logout token, not an ID token")
        try:
            base: EndSessionRequest = super().validate_request(request)
        except (TypeError, ValueError, KeyError, RecursionError):  # joserfc on e.g. {"crit": 5}
            raise InvalidRequestError("'id_token_hint' is malformed") from None
        claims = base.id_token_claims
        if claims is not None:
            # rpinitiated §2: "the OP MUST validate that it was the issuer of the ID Token".
            # The signature proves the key; the iss claim must name this OP too.
            if claims.get("iss") != self.server.settings.issuer:
                raise InvalidRequestError("'id_token_hint' was not issued by this OP")
            if base.client is None:
                raise InvalidRequestError("'id_token_hint' names no client of this OP")
        uri = data.get("post_logout_redirect_uri")
        if uri and not base.redirect_uri:
            # rpinitiated §3: "The OP MUST NOT perform post-logout redirection if the
            # post_logout_redirect_uri value supplied does not exactly match one of the
            # previously registered post_logout_redirect_uris values." We refuse the whole
            # request (§4: an error in the request means no redirection), so an RP learns of a
            # misconfiguration instead of leaving its user stranded.
            if base.client is None:
                raise InvalidRequestError(
                    "'post_logout_redirect_uri' needs 'client_id' or 'id_token_hint' to identify the client"
                )
            if uri not in (base.client.client_metadata.get("post_logout_redirect_uris") or []):
                raise InvalidRequestError("'post_logout_redirect_uri' is not registered for this client")
        req = LogoutRequest(
            request=base.request,
            client=base.client,
            id_token_claims=claims,
            redirect_uri=base.redirect_uri,
            logout_hint=base.logout_hint,
            ui_locales=base.ui_locales,
        )
        browser = self.server.current_session()
        req.browser_sid = browser.sid if browser is not None else None
        if claims is not None:
            hinted = self._hinted_session(claims, base.client.get_client_id())
            if hinted is None:
                # rpinitiated §2: "If the ID Token's sid claim does not correspond to the RP's
                # current session or a recent session at the OP, the OP SHOULD treat the logout
                # request as suspect": ask the End-User, and do not redirect to the RP.
                req.suspect_hint = True
                req.redirect_uri = None
            elif hinted.ended_at is None:
                req.hinted_sid = hinted.sid
                req.browser_same_user = browser is not None and browser.subject == hinted.subject
            # A hint whose session is already over (a recent session of this RP) stays valid
            # for the redirect, but ends nothing without the End-User's confirmation.
        return req

    def _hinted_session(self, claims: dict[str, Any], client_id: str) -> OPSession | None:
        """The OP session the hint's sid names, if the hint's client took part in it."""
        sid = claims.get("sid")
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            return None
        db = self.server.db
        took_part = db.scalar(
            select(SessionParticipant.id).where(
                SessionParticipant.sid == sid, SessionParticipant.client_id == client_id
            )
        )
        if took_part is None:
            return None
        row = db.get(OPSession, sid)
        if row is None or row.subject != claims.get("sub"):
            return None
        return row

    def create_response(self, validated_request: Any) -> Any:
        req: LogoutRequest = validated_request
        self.end_session(req)
        result = req.result
        if result is not None and result.redirect_uri and not result.frames:
            return 302, "", [("Location", result.redirect_uri)]
        return None  # the adapter renders the logged-out page (iframes, then the redirect)

    def end_session(self, end_session_request: Any) -> None:
        """One termination of every session this logout ends; the result lands on the request."""
        req: LogoutRequest = end_session_request
        sids = req.sessions_to_end()
        provider = self.server.provider
        # The request transaction holds nothing of ours: the termination runs in its own.
        self.server.db.rollback()
        if not sids:
            req.result = LogoutResult(None, (), req.redirect_uri, False, True)
            return
        client_id = req.client.get_client_id() if req.client is not None else None
        outcome = provider.terminate_now(
            by_sessions(sids),
            reason="RP-initiated logout" if client_id else "user logout",
            initiator=f"end_session:{client_id}" if client_id else "end_session",
            browser_present=True,
        )
        frames = tuple(
            Frame(d_id, iframe_url(uri, provider.settings.issuer, d_sid))
            for d_id, uri, d_sid in outcome.frontchannel
        )
        req.result = LogoutResult(
            outcome.termination_id,
            frames,
            req.redirect_uri,
            req.browser_sid is not None and req.browser_sid in sids,
            outcome.settled,
        )

    def resolve_client_from_id_token_claims(self, id_token_claims: dict[str, Any]) -> Any | None:
        # Core §2: aud is a string or an array; a one-element array names the client too
        # (Authlib's default only resolves the string form). With several audiences, azp names it.
        aud = id_token_claims.get("aud")
        if isinstance(aud, list):
            if len(aud) == 1 and isinstance(aud[0], str):
                aud = aud[0]
            elif isinstance(id_token_claims.get("azp"), str):
                aud = id_token_claims["azp"]
        if isinstance(aud, str):
            return self.server.query_client(aud)
        return None


def _is_logout_token(token: str) -> bool:
    """Whether a compact JWS looks like a Back-Channel logout token (header typ or events)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(_b64(parts[0]))
        claims = json.loads(_b64(parts[1]))
    except (ValueError, binascii.Error, RecursionError, UnicodeDecodeError):
        return False
    typ = header.get("typ") if isinstance(header, dict) else None
    if isinstance(typ, str) and typ.lower() in ("logout+jwt", "application/logout+jwt"):
        return True
    return isinstance(claims, dict) and "events" in claims


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
