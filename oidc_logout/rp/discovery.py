"""OpenID Provider metadata (Discovery 1.0) fetched once and cached.

Used by the JWKS cache (``jwks_uri``) and by the logout helpers (``end_session_endpoint``,
``revocation_endpoint``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from ._http import HTTPLimits, cache_ttl, check_url, get_json
from .errors import DiscoveryError

__all__ = ["DiscoveryClient", "ProviderMetadata", "metadata_str", "metadata_str_list"]

Clock = Callable[[], float]


def metadata_str(doc: Mapping[str, Any], name: str) -> str | None:
    """A metadata member that must be a non-empty string (RFC 8414 §2, SSF §7.1), else None:
    a malformed member counts as absent instead of failing the whole document."""
    v = doc.get(name)
    return v if isinstance(v, str) and v else None


def metadata_str_list(doc: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A metadata member that must be a JSON array of strings; other entries are dropped."""
    v = doc.get(name)
    return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of an OP's discovery document the RP library uses; ``raw`` has the rest."""

    issuer: str
    jwks_uri: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    revocation_endpoint_auth_methods_supported: tuple[str, ...] = ()
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], expected_issuer: str) -> ProviderMetadata:
        """Validate a discovery document against the configured issuer."""
        # Discovery 1.0 §4.3: "The issuer value returned MUST be identical to the Issuer URL
        # that was used as the prefix to /.well-known/openid-configuration".
        if doc.get("issuer") != expected_issuer:
            raise DiscoveryError("issuer_mismatch", "discovery issuer differs from the configured issuer")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise DiscoveryError("jwks_uri_missing", "discovery document has no jwks_uri")

        def opt_str(name: str) -> str | None:
            return metadata_str(doc, name)

        def str_list(name: str) -> tuple[str, ...]:
            return metadata_str_list(doc, name)

        return cls(
            issuer=expected_issuer,
            jwks_uri=jwks_uri,
            authorization_endpoint=opt_str("authorization_endpoint"),
            token_endpoint=opt_str("token_endpoint"),
            userinfo_endpoint=opt_str("userinfo_endpoint"),
            end_session_endpoint=opt_str("end_session_endpoint"),
            revocation_endpoint=opt_str("revocation_endpoint"),
            revocation_endpoint_auth_methods_supported=str_list("revocation_endpoint_auth_methods_supported"),
            id_token_signing_alg_values_supported=str_list("id_token_signing_alg_values_supported"),
            raw=dict(doc),
        )


class DiscoveryClient:
    """Fetches ``{issuer}/.well-known/openid-configuration`` and caches it.

    The lifetime follows ``Cache-Control: max-age`` clamped to [min_ttl, max_ttl]
    (``default_ttl`` when absent). Thread-safe; a failed refresh keeps serving the last good
    document until ``max_stale`` seconds after its expiry.
    """

    def __init__(
        self,
        issuer: str,
        *,
        session: requests.Session | None = None,
        limits: HTTPLimits = HTTPLimits(),
        clock: Clock = time.time,
        default_ttl: float = 3600.0,
        min_ttl: float = 60.0,
        max_ttl: float = 86400.0,
        max_stale: float = 3600.0,
    ) -> None:
        check_url(issuer, "issuer", DiscoveryError)
        self.issuer = issuer
        self._session = session or requests.Session()
        self._limits = limits
        self._clock = clock
        self._ttl = (default_ttl, min_ttl, max_ttl)
        self._max_stale = max_stale
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._expires_at = 0.0

    @property
    def url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def get(self, *, force: bool = False) -> ProviderMetadata:
        """Return cached metadata, fetching when missing, expired or ``force``d."""
        with self._lock:
            now = self._clock()
            if self._metadata is not None and not force and now < self._expires_at:
                return self._metadata
            try:
                doc, headers = get_json(self._session, self.url, self._limits, DiscoveryError)
                meta = ProviderMetadata.from_document(doc, self.issuer)
            except DiscoveryError:
                if self._metadata is not None and now < self._expires_at + self._max_stale:
                    return self._metadata
                raise
            self._metadata = meta
            self._expires_at = now + cache_ttl(headers, *self._ttl)
            return meta
