"""Back-Channel Logout §2.1: OP metadata."""

from __future__ import annotations


def metadata() -> dict[str, object]:
    return {
        # §2.1: "backchannel_logout_supported ... If omitted, the default value is false."
        "backchannel_logout_supported": True,
        # §2.1: "backchannel_logout_session_supported ... the OP can pass a sid (session ID)
        # Claim in the Logout Token to identify the RP session with the OP."
        "backchannel_logout_session_supported": True,
    }


__all__ = ["metadata"]
