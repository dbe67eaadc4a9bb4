"""RFC 7009 revocation endpoint over hashed tokens; a refresh token takes its grant with it."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import UnsupportedTokenTypeError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint

from .. import metrics
from ..core.token_lookup import HashedTokenLookup
from ..storage.base import utcnow
from ..storage.models import Token
from ..termination import by_grant, terminate
from ..vocabulary import TokenKind

#: revoked_reason of an access token its client revoked (here and in fastpath.py).
REVOKED_REASON = "revoked by its client (RFC 7009)"
#: The reason of the grant termination a refresh-token revocation is (here and, over a host's
#: tokens, flask/host_revocation.py).
REFRESH_REVOKED_REASON = "refresh token revoked by its client (RFC 7009)"


class RevocationEndpoint(HashedTokenLookup, _RevocationEndpoint):  # type: ignore[misc]
    # §2.1: the client authenticates as at the token endpoint; public clients send client_id.
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    SUPPORTED_TOKEN_TYPES = tuple(TokenKind)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        row = super().query_token(token_string, token_type_hint)
        if (
            row is None
            and token_string.count(".") == 2
            and self.server.provider.is_own_id_token(token_string)
        ):
            # §2.2.1 unsupported_token_type: "The authorization server does not support the
            # revocation of the presented token type." ID tokens cannot be revoked.
            # §2.2.1: the error response is RFC 6749 §5.2's, i.e. HTTP 400 (Authlib's error class
            # defaults to 401, which is for client authentication failures only).
            err = UnsupportedTokenTypeError()
            err.description = "ID tokens cannot be revoked; revoke the refresh or access token"
            err.status_code = 400
            raise err
        return row

    def revoke_token(self, token: Token, request: Any) -> None:
        # §2.2: "invalid tokens do not cause an error response" - revoking again is harmless.
        if token.revoked_at is not None:
            return
        if token.kind == TokenKind.REFRESH_TOKEN:
            # §2.1: "If the token passed to the request is a refresh token and the authorization
            # server supports the revocation of access tokens, then the authorization server
            # SHOULD also invalidate all access tokens based on the same authorization grant."
            if token.grant.revoked_at is None:
                terminate(
                    self.server.db,
                    by_grant(token.grant_id),
                    reason=REFRESH_REVOKED_REASON,
                    initiator=f"client:{token.client_id}",
                )
        else:
            # §2.1: revoking an access token MAY revoke its refresh token; we leave it alone.
            token.revoked_at = utcnow()
            token.revoked_reason = REVOKED_REASON
        metrics.revoked(token.kind, self.server.db)


__all__ = ["REFRESH_REVOKED_REASON", "REVOKED_REASON", "RevocationEndpoint"]
