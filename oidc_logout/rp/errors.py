"""Exceptions raised by the relying-party library.

Every rejection carries a short machine-readable ``reason`` so that callers can log and
count failures without ever logging the token itself.
"""

from __future__ import annotations

__all__ = [
    "DiscoveryError",
    "LogoutTokenError",
    "LogoutUnavailableError",
    "OutboundHTTPError",
    "RevocationError",
]


class LogoutTokenError(Exception):
    """A logout token was rejected.

    ``reason`` is one distinct code per validation rule (see docs/rp.md), ``error`` is the
    OAuth error code the RP answers with (Back-Channel Logout 1.0 §2.8: HTTP 400 with
    ``invalid_request``). The message never contains the token.
    """

    error = "invalid_request"
    #: HTTP status the back-channel endpoint answers with.
    status = 400

    def __init__(self, reason: str, description: str | None = None) -> None:
        self.reason = reason
        self.description = description or reason.replace("_", " ")
        super().__init__(f"{reason}: {self.description}")


class LogoutUnavailableError(LogoutTokenError):
    """The token could not be checked because the RP's own storage failed (e.g. the replay
    cache is down). Not the OP's fault: the endpoint answers 503 so the OP retries later."""

    error = "temporarily_unavailable"
    status = 503


class OutboundHTTPError(Exception):
    """An outbound HTTP call (discovery, JWKS, revocation) failed or returned junk."""

    def __init__(self, reason: str, description: str | None = None) -> None:
        self.reason = reason
        self.description = description or reason.replace("_", " ")
        super().__init__(f"{reason}: {self.description}")


class DiscoveryError(OutboundHTTPError):
    """The OP's discovery document could not be fetched or is not acceptable."""


class RevocationError(OutboundHTTPError):
    """The OP's revocation endpoint did not confirm the revocation (RFC 7009 §2.2)."""
