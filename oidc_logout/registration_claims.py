"""The logout client metadata as Authlib client-registration claims classes.

A host IdP running Authlib's RFC 7591 ``ClientRegistrationEndpoint`` adds these to its
``claims_classes``; registration then accepts and validates ``backchannel_logout_uri``,
``backchannel_logout_session_required`` (Back-Channel Logout §2.2), ``frontchannel_logout_uri``
and ``frontchannel_logout_session_required`` (Front-Channel Logout §2) with the same rules as
this package's own registration (one rule each, in the spec packages' ``registration.py``).
Authlib's own ``authlib.oidc.rpinitiated.ClientMetadataClaims`` covers
``post_logout_redirect_uris``. Framework-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from authlib.oauth2.claims import BaseClaims
from joserfc.errors import JoseError

from .backchannel import registration as backchannel_registration
from .errors import OIDCLogoutError
from .frontchannel import registration as frontchannel_registration

__all__ = ["BackchannelLogoutClaims", "FrontchannelLogoutClaims", "InvalidLogoutMetadata"]


class InvalidLogoutMetadata(JoseError):
    """Authlib's registration endpoint answers a JoseError with ``invalid_client_metadata``
    (RFC 7591 §3.2.2); this one carries the rule that was broken."""

    error = "invalid_client_metadata"


class _LogoutClaims(BaseClaims):  # type: ignore[misc]
    #: Development mode admits http and loopback URIs (never in production).
    dev_mode: ClassVar[bool] = False
    _rule: ClassVar[Callable[..., None]]

    def validate(self, now: Any = None, leeway: int = 0) -> None:
        super().validate(now, leeway)
        out: dict[str, Any] = {"redirect_uris": self.get("redirect_uris") or []}
        try:
            type(self)._rule(dict(self), out, dev_mode=self.dev_mode)
        except OIDCLogoutError as exc:
            raise InvalidLogoutMetadata(exc.description) from None
        out.pop("redirect_uris")
        self.update(out)

    @classmethod
    def configured(cls, *, dev_mode: bool) -> type[_LogoutClaims]:
        """This claims class with the deployment's development-mode setting."""
        return type(cls.__name__, (cls,), {"dev_mode": dev_mode})


class BackchannelLogoutClaims(_LogoutClaims):
    """Back-Channel Logout 1.0 §2.2 client metadata."""

    REGISTERED_CLAIMS: ClassVar[list[str]] = list(backchannel_registration.REGISTERED_CLAIMS)
    _rule = staticmethod(backchannel_registration.validate)


class FrontchannelLogoutClaims(_LogoutClaims):
    """Front-Channel Logout 1.0 §2 client metadata."""

    REGISTERED_CLAIMS: ClassVar[list[str]] = list(frontchannel_registration.REGISTERED_CLAIMS)
    _rule = staticmethod(frontchannel_registration.validate)
