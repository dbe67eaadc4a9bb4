"""URI rules shared by every registered URI (redirect, logout, post-logout)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import InvalidClientMetadata, InvalidRedirectURI

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_registered_uri(value: object, field: str, *, dev_mode: bool, redirect: bool = False) -> str:
    """An absolute https URI without fragment; http only for loopback hosts in dev mode.

    RFC 7591 §2 / Core Registration §2: redirect URIs are absolute and carry no fragment;
    Back-Channel Logout §2.2 and Front-Channel Logout §2: logout URIs "MUST NOT include any
    fragment component"."""
    err = InvalidRedirectURI if redirect else InvalidClientMetadata
    if not isinstance(value, str) or not value or len(value) > 2000:
        raise err(f"{field} must be a non-empty string URI of at most 2000 characters")
    if not value.isprintable():
        # RFC 3986 §2: control characters (NUL included, which PostgreSQL cannot store) never
        # appear in a URI.
        raise err(f"{field} contains characters that are not allowed in a URI")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise err(f"{field} is not a valid URI") from None
    del port
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise err(f"{field} must be an absolute http(s) URI")
    if "#" in value or parts.fragment:
        raise err(f"{field} must not contain a fragment")
    if parts.username or parts.password:
        raise err(f"{field} must not contain user information")
    if any(c in value for c in ' \t\r\n<>"\\'):
        raise err(f"{field} contains characters that are not allowed in a URI")
    if parts.scheme == "http":
        if not (dev_mode and is_loopback_host(parts.hostname)):
            raise err(f"{field} must use https (http is allowed only for loopback hosts in development mode)")
    elif is_loopback_host(parts.hostname) and not dev_mode:
        raise err(f"{field} must not point to a loopback host outside development mode")
    return value


def origin(uri: str) -> tuple[str, str, int]:
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


__all__ = ["LOOPBACK_HOSTS", "is_loopback_host", "origin", "validate_registered_uri"]
