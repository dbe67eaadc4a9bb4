"""A small in-memory user directory for the demo and the tests."""

from __future__ import annotations

from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

DEMO_USERS = {
    "alice": {"name": "Alice Liddell", "email": "alice@example.org"},
    "bob": {"name": "Bob Builder", "email": "bob@example.org"},
}


class DemoUsers:
    """Implements :class:`oidc_logout.protocols.UserDirectory`; passwords hashed with
    werkzeug's PBKDF2 so the demo shows the right habit."""

    def __init__(self, password: str, users: dict[str, dict[str, str]] | None = None) -> None:
        self._users = dict(users or DEMO_USERS)
        self._hash = generate_password_hash(password, method="pbkdf2:sha256:60000")
        self._dummy = self._hash

    def authenticate(self, username: str, password: str) -> str | None:
        known = username in self._users
        ok = check_password_hash(self._hash if known else self._dummy, password)
        return username if (known and ok) else None

    def exists(self, sub: str) -> bool:
        return sub in self._users

    def claims(self, sub: str, scope: str) -> dict[str, Any]:
        user = self._users.get(sub, {})
        scopes = scope.split()
        out: dict[str, Any] = {}
        if "profile" in scopes:
            out["name"] = user.get("name")
            out["preferred_username"] = sub
        if "email" in scopes:
            out["email"] = user.get("email")
            out["email_verified"] = True
        return out


__all__ = ["DEMO_USERS", "DemoUsers"]
