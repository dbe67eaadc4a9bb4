"""The OP side's public API: the one import place for an identity provider adopting
oidc-logout. Everything here is documented in docs/integration.md and kept stable; anything
imported from elsewhere in the package is an implementation detail.

    from oidc_logout.op import OIDCLogout, Settings, by_subject, terminate
"""

from __future__ import annotations

from .clients import load_clients, read_clients_file, upsert_client
from .config import Settings, settings_from_env, settings_from_mapping
from .context import ServerContext
from .errors import (
    InsufficientScope,
    InvalidClientMetadata,
    InvalidRedirectURI,
    InvalidRequest,
    InvalidToken,
    NotFound,
    OIDCLogoutError,
)
from .flask import OIDCLogout
from .flask.host import SessionIDMixin
from .host import HostTokenStore, TokenStore
from .protocols import EndUser, UserDirectory
from .provider import Provider, TerminationOutcome
from .registration_claims import BackchannelLogoutClaims, FrontchannelLogoutClaims
from .rpinitiated.end_session import LogoutResult
from .signin import SignIn, start_session
from .termination import (
    ClientKill,
    Credential,
    Expiry,
    GrantTarget,
    Sessions,
    Subject,
    Target,
    by_client,
    by_credential,
    by_grant,
    by_sessions,
    by_sid,
    by_subject,
    terminate,
)
from .vocabulary import AttemptOutcome, Channel, DeliveryState, TargetKind, TokenKind

__all__ = [
    "AttemptOutcome",
    "BackchannelLogoutClaims",
    "Channel",
    "ClientKill",
    "Credential",
    "DeliveryState",
    "EndUser",
    "Expiry",
    "FrontchannelLogoutClaims",
    "GrantTarget",
    "HostTokenStore",
    "InsufficientScope",
    "InvalidClientMetadata",
    "InvalidRedirectURI",
    "InvalidRequest",
    "InvalidToken",
    "LogoutResult",
    "NotFound",
    "OIDCLogout",
    "OIDCLogoutError",
    "Provider",
    "ServerContext",
    "SessionIDMixin",
    "Sessions",
    "Settings",
    "SignIn",
    "Subject",
    "Target",
    "TargetKind",
    "TerminationOutcome",
    "TokenKind",
    "TokenStore",
    "UserDirectory",
    "by_client",
    "by_credential",
    "by_grant",
    "by_sessions",
    "by_sid",
    "by_subject",
    "load_clients",
    "read_clients_file",
    "settings_from_env",
    "settings_from_mapping",
    "start_session",
    "terminate",
    "upsert_client",
]
