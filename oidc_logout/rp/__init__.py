"""Relying-party side of OIDC logout: validate back-channel logout tokens and end sessions.

Also a Shared Signals receiver (SSF 1.0 / CAEP: :class:`SETValidator`, :class:`SSFReceiver`,
:class:`PollingReceiver`, :class:`StreamClient`). Needs only jwcrypto and requests. Framework and storage integrations live in the optional
submodules ``oidc_logout.rp.flask``, ``oidc_logout.rp.flask_ssf``, ``oidc_logout.rp.sqla`` and ``oidc_logout.rp.redis``,
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
from .ssf import SecurityEvent, SETValidator
from .ssf_errors import SETError
from .ssf_poll import PollingReceiver, poll
from .ssf_receiver import ReceivedEvent, SSFReceiver
from .ssf_stream import StreamClient, TransmitterMetadata, fetch_transmitter_metadata
from .ssf_subject import SubjectId
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
    "PollingReceiver",
    "ProviderMetadata",
    "ReceivedEvent",
    "ReplayCache",
    "RevocationError",
    "SETError",
    "SETValidator",
    "SSFReceiver",
    "SecurityEvent",
    "SessionIndex",
    "SessionStore",
    "StaticKeys",
    "StreamClient",
    "SubjectId",
    "TransmitterMetadata",
    "build_end_session_url",
    "fetch_transmitter_metadata",
    "handle_backchannel_request",
    "poll",
    "revoke_refresh_token",
]
