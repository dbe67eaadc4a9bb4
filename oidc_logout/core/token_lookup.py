"""What RFC 7009 revocation and RFC 7662 introspection share: strict client credentials, the
``token`` parameter, and one lookup by hash whatever the hint says."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError
from sqlalchemy import select

from ..context import ServerContext
from ..limits import MAX_TOKEN_LENGTH
from ..storage.models import Token
from ..tokens import token_hash
from .client import check_client_credentials_syntax


class HashedTokenLookup:
    """Mixin for Authlib's token endpoints registered on a :class:`ServerContext`."""

    server: ServerContext

    def authenticate_endpoint_client(self, request: Any) -> Any:
        check_client_credentials_syntax(request)
        return super().authenticate_endpoint_client(request)  # type: ignore[misc]

    def check_params(self, request: Any, client: Any) -> None:
        token = request.form.get("token")
        # Only hashed, so any text up to the limit is looked up (and not found); RFC 7009 §2.2
        # answers an unknown token with 200.
        if not token or not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidRequestError("the 'token' parameter is required")
        # RFC 7009 §2.1 / RFC 7662 §2.1: the hint is only a hint. "If the server is unable to
        # locate the token using the given hint, it MUST extend its search across all of its
        # supported token types", so an unknown hint value is ignored, not refused (Authlib's
        # stock endpoints answer unsupported_token_type here).

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        # One lookup by hash covers every token type: there is nothing for a hint to order.
        return self.server.db.scalar(select(Token).where(Token.token_hash == token_hash(token_string)))


__all__ = ["HashedTokenLookup"]
