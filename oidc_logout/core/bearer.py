"""RFC 6750 bearer tokens at the OP's own protected resources (userinfo, the admin API):
Authlib's ``ResourceProtector`` with a validator that looks tokens up by hash and refuses a
token whose OP session has ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import ResourceProtector
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import InsufficientScope, InvalidToken
from ..limits import plausible_token
from ..storage.models import Token
from ..storage.queries import session_is_live, token_is_active
from ..tokens import token_hash
from ..vocabulary import TokenKind

__all__ = ["BearerProtector", "HashedTokenValidator"]


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


@dataclass(frozen=True)
class _Headers:
    headers: Any  # anything with .get(name): werkzeug Headers, a dict


class BearerProtector:
    """Validate ``Authorization: Bearer`` for a scope; errors are this package's exceptions
    carrying RFC 6750 §3's ``WWW-Authenticate`` challenge."""

    def __init__(self, db: Callable[[], Session], realm: str | None = None) -> None:
        self._protector = ResourceProtector()
        self._protector.register_token_validator(HashedTokenValidator(db, realm))
        self.realm = realm

    def token(self, headers: Any, scope: str | None = None) -> Token:
        """The valid access token of a request, holding ``scope`` if one is named."""
        auth = headers.get("Authorization") or ""
        if not auth.isascii() or not auth.isprintable():
            raise InvalidToken(
                "a bearer access token is required",
                challenge=self._challenge("invalid_request", "malformed Authorization header"),
            )
        try:
            token: Token = self._protector.validate_request([scope] if scope else None, _Headers(headers))
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
