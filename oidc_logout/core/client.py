"""Adapter giving Authlib the client protocol over a stored :class:`Client` row."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list

from ..limits import plausible_client_id
from ..storage.models import Client
from ..tokens import same_hash


class OAuthClient(ClientMixin):  # type: ignore[misc]
    def __init__(self, row: Client) -> None:
        self.row = row
        self.client_id = row.client_id
        self.id_token_signed_response_alg = row.id_token_signed_response_alg

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {
            "post_logout_redirect_uris": list(self.row.post_logout_redirect_uris or []),
            "redirect_uris": list(self.row.redirect_uris or []),
        }

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris or []
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        allowed = set(scope_to_list(self.row.scope or ""))
        return str(list_to_scope([s for s in scope_to_list(scope) if s in allowed]))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 §4.1.3: exact string matching of redirect URIs.
        return redirect_uri in (self.row.redirect_uris or [])

    def check_client_secret(self, client_secret: str) -> bool:
        return same_hash(client_secret, self.row.client_secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        registered = self.row.token_endpoint_auth_method
        if endpoint == "token":
            return method == registered
        # Revocation (RFC 7009 §2.1) and introspection accept the client's own method, and
        # either secret method for a confidential client.
        if registered == "none":
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type in (self.row.response_types or [])

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (self.row.grant_types or [])

    @property
    def is_public(self) -> bool:
        return self.row.token_endpoint_auth_method == "none"


def check_client_credentials_syntax(request: Any) -> None:
    """Refuse malformed client credentials with ``invalid_client`` (RFC 6749 §5.2) before any
    lookup: a ``Basic`` header that is not base64 of UTF-8 ``id:secret`` (RFC 7617 §2, RFC 6749
    §2.3.1) or a client_id the database cannot even hold. Authlib's own parser lets a
    non-ASCII or non-UTF-8 header escape as an exception (a 500)."""
    auth = request.headers.get("Authorization") or ""
    if " " in auth and len(auth.split(None, 1)) != 2:  # e.g. " " or "\x85 x": Authlib's split crashes
        raise InvalidClientError(status_code=401, description="malformed Authorization header")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip().encode("ascii")).decode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeError is a ValueError
            raise InvalidClientError(
                status_code=401, description="malformed HTTP Basic client credentials"
            ) from None
        client_id = unquote(decoded.partition(":")[0])
        if decoded and not plausible_client_id(client_id):
            raise InvalidClientError(status_code=401, description="unknown client")
    form_id = request.payload.data.get("client_id")
    if form_id is not None and not plausible_client_id(form_id):
        raise InvalidClientError(description="unknown client")


__all__ = ["OAuthClient", "check_client_credentials_syntax"]
