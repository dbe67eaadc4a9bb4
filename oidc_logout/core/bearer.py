"""RFC 6750 bearer tokens at the OP's own protected resources (userinfo, the admin API, the
operator console, SSF stream management): Authlib's ``ResourceProtector`` with one of two
validators, both refusing a token a termination has ended:

* :class:`HashedTokenValidator` (turnkey mode): the package's own tokens, looked up by hash;
* :class:`HostTokenValidator` (extension mode): the host's tokens, rows of its model on
  Authlib's ``OAuth2TokenMixin``, so the host's ``client_credentials`` tokens reach the admin
  API and SSF endpoints served by the extension.

Both answer through :class:`BearerProtector`, which turns Authlib's errors into this package's
exceptions with RFC 6750 §3's ``WWW-Authenticate`` challenge."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from authlib.oauth2.rfc6749 import ResourceProtector
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import InsufficientScope, InvalidToken
from ..host import row_pk, session_of_token
from ..limits import plausible_token
from ..storage.models import Token
from ..storage.queries import cutoffs_for, host_token_is_cut_off, session_is_live, token_is_active
from ..tokens import token_hash
from ..vocabulary import TokenKind

__all__ = [
    "BearerProtector",
    "BearerToken",
    "HashedTokenValidator",
    "HostTokenValidator",
    "host_access_token_terminated",
]


class BearerToken(Protocol):
    """**Protocol:** what the protected endpoints read of a validated access token, whichever
    store it came from (:class:`~oidc_logout.storage.models.Token` or a host token row)."""

    @property
    def client_id(self) -> str: ...

    @property
    def scope(self) -> str: ...


class HashedTokenValidator(BearerTokenValidator):  # type: ignore[misc]
    """Access tokens by SHA-256 hash; revoked, expired or session-ended ones are invalid."""

    def __init__(self, db: Callable[[], Session], realm: str | None = None) -> None:
        super().__init__(realm=realm)
        self._db = db

    def authenticate_token(self, token_string: str) -> Token | None:
        if not plausible_token(token_string):
            return None
        return self._db().scalar(
            select(Token).where(
                Token.token_hash == token_hash(token_string), Token.kind == TokenKind.ACCESS_TOKEN
            )
        )

    def validate_token(self, token: Token | None, scopes: list[str] | None, request: Any) -> None:
        if token is not None and not token.is_revoked() and not token.is_expired():
            # Before the scope check: a dead token is invalid_token (401), not insufficient_scope.
            # token_is_active: the one rule (session ended or cut off, client kill switch, ...).
            db = self._db()
            if not token_is_active(db, token):
                if token.sid and not session_is_live(db, token.sid):
                    raise InvalidTokenError(
                        description="the access token's session has ended", realm=self.realm
                    )
                raise InvalidTokenError(realm=self.realm)
        super().validate_token(token, scopes, request)


class HostTokenValidator(BearerTokenValidator):  # type: ignore[misc]
    """Extension mode: access tokens are rows of the host's token model (Authlib's
    ``OAuth2TokenMixin``: ``access_token``, ``client_id``, ``scope``, ``issued_at``,
    ``expires_in``, ``access_token_revoked_at``, ``refresh_token_revoked_at``, ``user_id``),
    read through the host's session.

    A token is active when all of these hold (the same rule as the turnkey
    :func:`~oidc_logout.storage.queries.token_is_active`, over the host's columns):

    * the mixin's own checks: not expired (``issued_at + expires_in``), not revoked (either
      revocation column: RFC 7009 §2.1, revoking the refresh token SHOULD invalidate the
      access tokens of the same grant; the host's own ``create_bearer_token_validator`` agrees);
    * no subject or client cut-off covers it
      (:func:`~oidc_logout.storage.queries.host_token_is_cut_off`);
    * if it is bound to an OP session (``oidc_logout_token_session``), that session is live:
      Back-Channel Logout §2.7, tokens issued in an ended session stop working.

    :param token_model: the host's mapped token class.
    :param user_id_attribute: its column naming the End-User; the OP session's subject is
        that value as a string (what the host's login passed to ``sign_in``).
    """

    def __init__(
        self,
        db: Callable[[], Session],
        token_model: Any,
        *,
        user_id_attribute: str = "user_id",
        realm: str | None = None,
    ) -> None:
        super().__init__(realm=realm)
        self._db = db
        self.model = token_model
        self._user_id_attribute = user_id_attribute

    def authenticate_token(self, token_string: str) -> Any:
        # The mixin stores the value itself (Authlib's guide): an indexed equality lookup.
        if not plausible_token(token_string):
            return None
        return self._db().scalar(select(self.model).where(self.model.access_token == token_string))

    def validate_token(self, token: Any, scopes: list[str] | None, request: Any) -> None:
        if token is not None and not token.is_revoked() and not token.is_expired():
            # Before the scope check: a dead token is invalid_token (401), not insufficient_scope.
            self._check_not_terminated(token)
        super().validate_token(token, scopes, request)

    def _check_not_terminated(self, row: Any) -> None:
        why = host_access_token_terminated(self._db(), row, user_id_attribute=self._user_id_attribute)
        if why == SESSION_ENDED:
            raise InvalidTokenError(description="the access token's session has ended", realm=self.realm)
        if why is not None:
            raise InvalidTokenError(realm=self.realm)


#: :func:`host_access_token_terminated` reasons.
CUT_OFF = "cut_off"
SESSION_ENDED = "session_ended"


def host_access_token_terminated(db: Session, row: Any, *, user_id_attribute: str = "user_id") -> str | None:
    """Why a termination has ended the host access token ``row`` (:data:`CUT_OFF`,
    :data:`SESSION_ENDED`), or None: the one rule of the extension's bearer checks and of
    RFC 7662 introspection over the host's tokens (§2.2: ``active`` says what they do).
    Revocation and expiry are the row's own columns, checked by the caller."""
    user = getattr(row, user_id_attribute, None)
    subject = str(user) if user is not None else None
    client_id = str(row.client_id)
    issued_at = dt.datetime.fromtimestamp(int(row.issued_at or 0), dt.UTC)
    cutoffs = cutoffs_for(db, subject, client_id)
    if cutoffs and host_token_is_cut_off(cutoffs, subject, client_id, issued_at):
        return CUT_OFF
    sid = session_of_token(db, row_pk(row))
    if sid is not None and not session_is_live(db, sid, cutoffs):
        return SESSION_ENDED
    return None


@dataclass(frozen=True)
class _Headers:
    headers: Any  # anything with .get(name): werkzeug Headers, a dict


class BearerProtector:
    """Validate ``Authorization: Bearer`` for a scope; errors are this package's exceptions
    carrying RFC 6750 §3's ``WWW-Authenticate`` challenge."""

    def __init__(
        self,
        db: Callable[[], Session],
        realm: str | None = None,
        *,
        validator: BearerTokenValidator | None = None,
    ) -> None:
        """``validator``: where tokens come from; the package's own hashed tokens by default,
        a :class:`HostTokenValidator` in extension mode."""
        self._protector = ResourceProtector()
        self._protector.register_token_validator(validator or HashedTokenValidator(db, realm))
        self.realm = realm

    def token(self, headers: Any, scope: str | None = None) -> BearerToken:
        """The valid access token of a request, holding ``scope`` if one is named."""
        auth = headers.get("Authorization") or ""
        if not auth.isascii() or not auth.isprintable():
            raise InvalidToken(
                "a bearer access token is required",
                challenge=self._challenge("invalid_request", "malformed Authorization header"),
            )
        try:
            token: BearerToken = self._protector.validate_request(
                [scope] if scope else None, _Headers(headers)
            )
        except OAuth2Error as err:
            if err.error == "insufficient_scope":
                raise InsufficientScope(
                    f"the '{scope}' scope is required", challenge=self._challenge(err.error, None, scope)
                ) from None
            if err.error == "missing_authorization":
                # RFC 6750 §3.1: "If the request lacks any authentication information ... the
                # resource server SHOULD NOT include an error code".
                raise InvalidToken(
                    "a bearer access token is required", challenge=self._challenge(None, None)
                ) from None
            description = (
                err.description
                if err.error == "invalid_token" and err.description != InvalidTokenError.description
                else "the access token is not active"
            )
            raise InvalidToken(description, challenge=self._challenge("invalid_token", description)) from None
        return token

    def _challenge(self, error: str | None, description: str | None, scope: str | None = None) -> str:
        # RFC 6750 §3: WWW-Authenticate: Bearer realm="...", error="...", error_description="..."
        parts = [f'realm="{self.realm}"'] if self.realm else []
        if error:
            parts.append(f'error="{error}"')
        if description:
            parts.append('error_description="{}"'.format(description.replace('"', "'")))
        if scope:
            parts.append(f'scope="{scope}"')
        return "Bearer" + (" " + ", ".join(parts) if parts else "")
