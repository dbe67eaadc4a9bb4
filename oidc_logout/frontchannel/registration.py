"""Front-Channel Logout §2: client metadata."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidClientMetadata
from ..uris import origin, validate_registered_uri

REGISTERED_CLAIMS = ("frontchannel_logout_uri", "frontchannel_logout_session_required")


def validate(metadata: dict[str, Any], out: dict[str, Any], *, dev_mode: bool) -> None:
    uri = metadata.get("frontchannel_logout_uri")
    if uri is not None:
        uri = validate_registered_uri(uri, "frontchannel_logout_uri", dev_mode=dev_mode)
        # §2: "The domain, port, and scheme of this URL MUST be the same as that of a
        # registered Redirection URI value."
        redirects = out.get("redirect_uris") or []
        if not any(origin(uri) == origin(r) for r in redirects):
            raise InvalidClientMetadata(
                "frontchannel_logout_uri must have the scheme, host and port of a registered redirect_uri"
            )
        out["frontchannel_logout_uri"] = uri
    required = metadata.get("frontchannel_logout_session_required", False)
    if not isinstance(required, bool):
        raise InvalidClientMetadata("frontchannel_logout_session_required must be a boolean")
    out["frontchannel_logout_session_required"] = required


__all__ = ["REGISTERED_CLAIMS", "validate"]
