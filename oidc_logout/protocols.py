"""What a host IdP implements for oidc_logout (typing.Protocols; no framework imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EndUser:
    """The authenticated end-user as the OP core sees it."""

    sub: str
    #: The OP session the user is acting in (None for refresh of a detached offline grant).
    sid: str | None = None
    auth_time: int | None = None

    def get_user_id(self) -> str:  # Authlib's user protocol
        return self.sub


class UserDirectory(Protocol):
    """**Protocol:** the host's user store."""

    def authenticate(self, username: str, password: str) -> str | None:
        """Return the subject identifier for valid credentials, else None."""

    def exists(self, sub: str) -> bool:
        """Whether the subject still exists (and may be issued tokens)."""

    def claims(self, sub: str, scope: str) -> dict[str, Any]:
        """OIDC Core §5.4 claims for ``scope`` (``sub`` is added by the caller)."""


__all__ = ["EndUser", "UserDirectory"]
