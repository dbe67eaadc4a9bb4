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


def same_secret(given: object, expected: str) -> bool:
    """Constant-time comparison of a value a client sent with a secret we hold. Compares UTF-8
    bytes: ``hmac.compare_digest`` refuses non-ASCII ``str`` with a TypeError (a 500)."""
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


__all__ = ["new_id", "new_token", "same_hash", "same_secret", "token_hash"]
