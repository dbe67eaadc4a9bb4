"""The termination admin API's requests, validated without a framework.

The Flask adapter hands over the decoded JSON body; what comes back is a typed request or an
``invalid_request`` error (nothing has changed yet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest
from .termination import Target, by_client, by_grant, by_sid, by_subject

__all__ = ["RotateSecretRequest", "TerminationRequest", "parse_rotate_secret", "parse_termination"]

#: The longest wait an administrator may ask for, in seconds.
MAX_WAIT = 30
_TARGETS: dict[str, Callable[[str], Target]] = {
    "sid": by_sid,
    "sub": by_subject,
    "client_id": by_client,
    "grant_id": by_grant,
}


@dataclass(frozen=True)
class TerminationRequest:
    target: Target
    reason: str
    include_offline: bool
    wait: float


@dataclass(frozen=True)
class RotateSecretRequest:
    end_previous: bool
    reason: str


def parse_termination(body: Any) -> TerminationRequest:
    """``{"sid"|"sub"|"client_id"|"grant_id": str, "reason": str, "include_offline"?: bool,
    "wait"?: s}``. ``grant_id`` names one of the package's own grants or, in extension mode,
    ``host-token:<table>:<pk>`` (:class:`~oidc_logout.host.HostTokenStore`)."""
    if not isinstance(body, dict):
        raise InvalidRequest("a JSON object is required")
    named = [k for k in _TARGETS if body.get(k) is not None]
    if len(named) != 1:
        raise InvalidRequest("exactly one of 'sid', 'sub', 'client_id' or 'grant_id' is required")
    value = body[named[0]]
    reason = body.get("reason")
    include_offline = body.get("include_offline", False)
    wait = body.get("wait", 0)
    if not isinstance(value, str) or not value or len(value) > 255 or not value.isprintable():
        raise InvalidRequest(f"'{named[0]}' must be a non-empty string")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest("'reason' is required")
    if not isinstance(include_offline, bool):
        raise InvalidRequest("'include_offline' must be a boolean")
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise InvalidRequest(f"'wait' must be a number of seconds from 0 to {MAX_WAIT}")
    return TerminationRequest(_TARGETS[named[0]](value), reason.strip(), include_offline, float(wait))


def parse_rotate_secret(body: Any) -> RotateSecretRequest:
    """``{"end_previous"?: bool (default true), "reason"?: str}``"""
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise InvalidRequest("a JSON object is required")
    end_previous = body.get("end_previous", True)
    reason = body.get("reason") or "client secret rotated"
    if not isinstance(end_previous, bool) or not isinstance(reason, str):
        raise InvalidRequest("'end_previous' must be a boolean and 'reason' a string")
    return RotateSecretRequest(end_previous, reason)
