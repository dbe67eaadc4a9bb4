"""Exceptions of the Shared Signals receiver, each carrying an RFC 8935 error code.

RFC 8935 §2.4 (and the IANA "Security Event Token Error Codes" registry it creates): a SET
Recipient that cannot parse, validate or authenticate a SET answers HTTP 400 with a JSON object
``{"err": <code>, "description": <text>}``. RFC 8936 §2.4.4 uses the same codes in ``setErrs``.
Every rejection also has a distinct ``reason`` (one per validation rule) for logs and metrics;
neither ever contains the SET.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERROR_CODES",
    "SETError",
    "SETReplayed",
    "SETUnavailableError",
]

#: RFC 8935 §2.4 error codes, plus SSF 1.0 §8.1.4.1 ``invalid_state`` (registered by SSF).
ERROR_CODES = frozenset(
    {
        "invalid_request",
        "invalid_key",
        "invalid_issuer",
        "invalid_audience",
        "authentication_failed",
        "access_denied",
        "invalid_state",
    }
)


class SETError(Exception):
    """A SET was rejected.

    :param err: the RFC 8935 §2.4 error code (``invalid_request``, ``invalid_key``,
        ``invalid_issuer``, ``invalid_audience``, ``authentication_failed``, ``access_denied``)
        or SSF's ``invalid_state``.
    :param reason: a short machine-readable code naming the rule that failed.
    :param description: human-readable text for the ``description`` member; never the SET.
    """

    #: HTTP status of a push response carrying this error (RFC 8935 §2.4: 400).
    status = 400

    def __init__(self, err: str, reason: str, description: str | None = None) -> None:
        if err not in ERROR_CODES:
            raise ValueError(f"unknown SET error code {err!r}")
        self.err = err
        self.reason = reason
        self.description = description or reason.replace("_", " ")
        super().__init__(f"{err}/{reason}: {self.description}")

    def as_json(self) -> dict[str, str]:
        """The RFC 8935 §2.4 error object (also an RFC 8936 ``setErrs`` value)."""
        return {"err": self.err, "description": f"{self.reason}: {self.description}"}


class SETReplayed(SETError):
    """The SET's ``jti`` was already received (and processed) from this issuer.

    Not an error for the transmitter: RFC 8935 §4 (delivery reliability) lets a transmitter
    retry a SET whose acknowledgement it never saw, so the receiver acknowledges a duplicate
    (202 / ``ack``) without acting on it a second time.
    """

    def __init__(self, event: Any = None) -> None:
        super().__init__("invalid_request", "replayed", "SET was already received")
        #: The validated :class:`~oidc_logout.rp.ssf.SecurityEvent` that was a duplicate.
        self.event = event


class SETUnavailableError(SETError):
    """The SET could not be checked or processed because the receiver's own dependencies failed
    (JWKS fetch, replay store, session store). Not the transmitter's fault: push answers 503 so
    the transmitter retries (RFC 8935 §2.4: "the applicable HTTP Status Code"), poll neither
    acknowledges nor rejects it so it is delivered again."""

    status = 503

    def __init__(self, reason: str, description: str | None = None) -> None:
        super().__init__("invalid_request", reason, description)
