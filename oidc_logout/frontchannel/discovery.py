"""Front-Channel Logout §3: OP metadata."""

from __future__ import annotations


def metadata() -> dict[str, object]:
    return {
        "frontchannel_logout_supported": True,
        # §3: the OP "can pass iss (issuer) and sid (session ID) query parameters to identify
        # the RP session with the OP when the frontchannel_logout_uri is used."
        "frontchannel_logout_session_supported": True,
    }


__all__ = ["metadata"]
