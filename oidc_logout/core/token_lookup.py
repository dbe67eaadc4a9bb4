"""What RFC 7009 revocation and RFC 7662 introspection share: strict client credentials, the
``token`` parameter, and one lookup by hash whatever the hint says."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError
from sqlalchemy import select

from ..storage.models import Token
from ..tokens import token_hash
from .client import check_client_credentials_syntax

MAX_TOKEN_LENGTH = 4096


class HashedTokenLookup:
    """Mixin for Authlib's token endpoints (``self.server`` is the OPServer)."""

    server: Any

    def authenticate_endpoint_client(self, request: Any) -> Any:
        check_client_credentials_syntax(request)
        return super().authenticate_endpoint_client(request)  # type: ignore[misc]

    def check_params(self, request: Any, client: Any) -> None:
        token = request.form.get("token")
        if not token or not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidRequestError("the 'token' parameter is required")
        # RFC 7009 §2.1 / RFC 7662 §2.1: the hint is only a hint. "If the server is unable to
        # locate the token using the given hint, it MUST extend its search across all of its
        # supported token types", so an unknown hint value is ignored, not refused (Authlib's
        # stock endpoints answer unsupported_token_type here).

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        # One lookup by hash covers every token type: there is nothing for a hint to order.
        return self.server.db.scalar(select(Token).where(Token.token_hash == token_hash(token_string)))
