"""Back-Channel Logout §2.2: client metadata."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidClientMetadata
from ..uris import validate_registered_uri

REGISTERED_CLAIMS = ("backchannel_logout_uri", "backchannel_logout_session_required")


def validate(metadata: dict[str, Any], out: dict[str, Any], *, dev_mode: bool) -> None:
    uri = metadata.get("backchannel_logout_uri")
    if uri is not None:
        # §2.2: "This URL MUST be absolute and MAY contain an application/x-www-form-urlencoded
        # formatted query component ... The backchannel_logout_uri MUST NOT include any
        # fragment component."
        out["backchannel_logout_uri"] = validate_registered_uri(
            uri, "backchannel_logout_uri", dev_mode=dev_mode
        )
    required = metadata.get("backchannel_logout_session_required", False)
    if not isinstance(required, bool):
        raise InvalidClientMetadata("backchannel_logout_session_required must be a boolean")
    out["backchannel_logout_session_required"] = required


__all__ = ["REGISTERED_CLAIMS", "validate"]
