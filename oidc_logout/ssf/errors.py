"""Errors of the SSF endpoints: the project's OAuth-style errors, plus the ones SSF and the
delivery RFCs add (409 Conflict, 429, and the RFC 8935/8936 ``err`` body of the poll endpoint)."""

from __future__ import annotations

from ..errors import InvalidRequest, OIDCLogoutError

__all__ = ["Conflict", "PollError", "TooFrequent"]


class Conflict(OIDCLogoutError):
    """SSF §8.1.1.1: 409 when the transmitter does not take another stream of this receiver."""

    error = "conflict"
    status_code = 409


class TooFrequent(OIDCLogoutError):
    """SSF §8.1.4.2: 429 for verification requests more frequent than
    ``min_verification_interval``."""

    error = "too_many_requests"
    status_code = 429

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, int(self.retry_after)))}


class PollError(InvalidRequest):
    """A malformed RFC 8936 poll request: 400 with the RFC 8935 §2.3 error body
    (``err`` and ``description``), the format the SET delivery RFCs share."""

    def as_dict(self) -> dict[str, str]:
        return {"err": "invalid_request", "description": self.description}
