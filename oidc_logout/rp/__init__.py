"""Relying-party side of OIDC logout: validate back-channel logout tokens and end sessions.

Needs only jwcrypto and requests. Framework and storage integrations live in the optional
submodules ``oidc_logout.rp.flask``, ``oidc_logout.rp.sqla`` and ``oidc_logout.rp.redis``,
which this package never imports.
"""

from __future__ import annotations

from .client import build_end_session_url, revoke_refresh_token
from .discovery import DiscoveryClient, ProviderMetadata
from .errors import DiscoveryError, LogoutTokenError, RevocationError
from .jwks import JWKSCache, StaticKeys
from .receiver import BackchannelLogoutReceiver, LogoutResult, handle_backchannel_request
from .replay import MemoryReplayCache, ReplayCache
from .sessions import MemorySessionIndex, MemorySessionStore, SessionIndex, SessionStore
from .validation import BACKCHANNEL_LOGOUT_EVENT, LogoutToken, LogoutTokenValidator

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "BackchannelLogoutReceiver",
    "DiscoveryClient",
    "DiscoveryError",
    "JWKSCache",
    "LogoutResult",
    "LogoutToken",
    "LogoutTokenError",
    "LogoutTokenValidator",
    "MemoryReplayCache",
    "MemorySessionIndex",
    "MemorySessionStore",
    "ProviderMetadata",
    "ReplayCache",
    "RevocationError",
    "SessionIndex",
    "SessionStore",
    "StaticKeys",
    "build_end_session_url",
    "handle_backchannel_request",
    "revoke_refresh_token",
]
