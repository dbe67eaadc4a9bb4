"""RFC 7662 introspection: ``active: false`` the moment a token is revoked or its session ends."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint

from ..core.token_lookup import HashedTokenLookup
from ..storage.models import Token
from ..storage.queries import session_is_live, token_is_active
from ..vocabulary import TokenKind

#: A client with this scope registered may introspect any token (a resource server).
INTROSPECT_SCOPE = "oidc_logout:introspect"


class IntrospectionEndpoint(HashedTokenLookup, _IntrospectionEndpoint):  # type: ignore[misc]
    # §2.1: "the endpoint MUST also require some form of authorization"; public clients can't.
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def check_permission(self, token: Token, client: Any, request: Any) -> bool:
        # §4: the server must not reveal tokens to resource servers not entitled to them.
        return (
            token.client_id == client.get_client_id() or INTROSPECT_SCOPE in (client.row.scope or "").split()
        )

    def create_introspection_payload(self, token: Token | None) -> dict[str, Any]:
        # §2.2: "If the introspection call is properly authorized but the token is not active,
        # does not exist on this server, or the protected resource is not allowed to introspect
        # this particular token, then the authorization server MUST return ... active false".
        # "Active" is what the token and userinfo endpoints accept (token_is_active): an
        # offline_access refresh token that a logout kept (Back-Channel Logout §2.7) is active.
        if token is None or not token_is_active(self.server.db, token):
            return {"active": False}
        return self.introspect_token(token)

    def introspect_token(self, token: Token) -> dict[str, Any]:
        body: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "client_id": token.client_id,
            "token_type": "Bearer" if token.kind == TokenKind.ACCESS_TOKEN else str(TokenKind.REFRESH_TOKEN),
            "iat": int(token.issued_at.timestamp()),
            "iss": self.server.provider.settings.issuer,
            "aud": token.client_id,
        }
        if token.expires_at:
            body["exp"] = int(token.expires_at.timestamp())
        if token.subject:
            body["sub"] = token.subject
        # An offline grant's refresh token outlives its session: no sid of an ended session.
        if token.sid and session_is_live(self.server.db, token.sid):
            body["sid"] = token.sid
        return body


__all__ = ["INTROSPECT_SCOPE", "IntrospectionEndpoint"]
