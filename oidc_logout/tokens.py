"""Opaque token values: generated with 256 random bits, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def new_id(nbytes: int = 16) -> str:
    """Identifiers such as sid: Core 1.0 / Back-Channel §2.1 want them unguessable (>=128 bits)."""
    return secrets.token_urlsafe(nbytes)


def token_hash(value: str) -> str:
    """SHA-256 hex of a token value; tokens have 256 bits of entropy, so no salt or KDF is
    needed (unlike passwords) and a lookup stays one indexed equality."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def same_hash(value: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(token_hash(value), stored_hash)
