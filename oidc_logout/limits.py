"""Input rules several endpoints share, each written once.

Framework- and storage-free: the spec modules, the RFC 7009 fast path and the Flask adapter
all ask these, so a limit cannot differ between two paths to the same table.
"""

from __future__ import annotations

__all__ = [
    "MAX_CLIENT_ID_LENGTH",
    "MAX_REQUEST_BYTES",
    "MAX_TOKEN_LENGTH",
    "plausible_client_id",
    "plausible_token",
]

#: The ``oidc_client.client_id`` column holds 64 characters.
MAX_CLIENT_ID_LENGTH = 64
#: Longest token accepted at any endpoint (ours are 43 characters; an ID token sent where an
#: access token belongs stays far below). Longer values are refused before any lookup.
MAX_TOKEN_LENGTH = 4096
#: Default request-body limit of the extension's routes (Settings.max_request_bytes).
MAX_REQUEST_BYTES = 64 * 1024


def plausible_client_id(value: object) -> bool:
    """A client_id worth looking up: a short printable string. Anything else (NUL bytes, control
    characters, which PostgreSQL refuses in text columns) is an unknown client, never a 500."""
    return isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_LENGTH and value.isprintable()


def plausible_token(value: object) -> bool:
    """A token worth hashing and looking up (RFC 6750 §2.1 b64token is printable ASCII)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_TOKEN_LENGTH
        and value.isascii()
        and value.isprintable()
    )
