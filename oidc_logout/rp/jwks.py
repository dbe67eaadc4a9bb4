"""The OP's signing keys, fetched from ``jwks_uri`` and cached.

* Cached for ``Cache-Control: max-age`` clamped to [min_ttl, max_ttl]: no network call per
  token while the cache is fresh.
* A token whose ``kid`` is not in the cache triggers at most one refetch (key rotation,
  OIDC Core 10.1.1), and such forced refetches are rate limited to one per
  ``unknown_kid_refetch_interval`` seconds so a flood of tokens with random kids cannot
  hammer the OP.
* Only asymmetric keys are ever returned: a JWKS is public, so an ``oct`` entry or an HMAC
  algorithm would let anyone forge tokens (RFC 8725 §2.1, §3.1).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
from jwcrypto import jwk

from ._http import HTTPLimits, cache_ttl, get_json
from .discovery import DiscoveryClient
from .errors import LogoutTokenError, OutboundHTTPError

__all__ = ["JWKSCache", "KeyProvider", "StaticKeys", "key_matches_alg"]

log = logging.getLogger(__name__)
Clock = Callable[[], float]

_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES256K": "secp256k1"}


def key_matches_alg(key: jwk.JWK, alg: str) -> bool:
    """True when ``key`` is an asymmetric verification key usable with ``alg``."""
    kty = key.get("kty")
    if alg.startswith(("RS", "PS")):
        ok = kty == "RSA"
    elif alg in _EC_CURVES:
        ok = kty == "EC" and key.get("crv") == _EC_CURVES[alg]
    elif alg in ("EdDSA", "Ed25519", "Ed448"):
        ok = kty == "OKP" and key.get("crv") in ("Ed25519", "Ed448")
    else:
        ok = False
    if not ok:
        return False
    if key.get("use") not in (None, "sig"):
        return False
    ops = key.get("key_ops")
    if ops is not None and "verify" not in ops:
        return False
    key_alg = key.get("alg")
    return key_alg is None or key_alg == alg


class KeyProvider(Protocol):
    """Where the validator gets verification keys from."""

    def keys_for(self, kid: str | None, alg: str) -> list[jwk.JWK]:
        """Candidate keys for a token header; raise LogoutTokenError("unknown_kid") if none."""
        ...


class JWKSCache:
    """Cached JWKS of one OP; give either ``jwks_uri`` or a ``discovery`` client."""

    def __init__(
        self,
        jwks_uri: str | None = None,
        *,
        discovery: DiscoveryClient | None = None,
        session: requests.Session | None = None,
        limits: HTTPLimits = HTTPLimits(),
        clock: Clock = time.time,
        default_ttl: float = 300.0,
        min_ttl: float = 30.0,
        max_ttl: float = 86400.0,
        unknown_kid_refetch_interval: float = 30.0,
        max_stale: float = 3600.0,
    ) -> None:
        if (jwks_uri is None) == (discovery is None):
            raise ValueError("give exactly one of jwks_uri or discovery")
        self._jwks_uri = jwks_uri
        self._discovery = discovery
        self._session = session or requests.Session()
        self._limits = limits
        self._clock = clock
        self._ttl = (default_ttl, min_ttl, max_ttl)
        self._refetch_interval = unknown_kid_refetch_interval
        self._max_stale = max_stale
        self._lock = threading.Lock()
        self._keys: list[jwk.JWK] | None = None
        self._expires_at = 0.0
        self._last_fetch = float("-inf")
        self.fetch_count = 0  # network fetches performed, for metrics and tests

    def _uri(self) -> str:
        if self._jwks_uri is not None:
            return self._jwks_uri
        assert self._discovery is not None
        return self._discovery.get().jwks_uri

    def _fetch(self, now: float) -> None:
        """Replace the cached keys; on failure keep stale keys for ``max_stale`` seconds."""
        self._last_fetch = now
        self.fetch_count += 1
        try:
            doc, headers = get_json(self._session, self._uri(), self._limits)
        except OutboundHTTPError as exc:
            log.warning("JWKS fetch failed: %s", exc.reason)
            if self._keys is not None and now < self._expires_at + self._max_stale:
                return
            raise LogoutTokenError("jwks_unavailable", "the OP's keys could not be fetched") from None
        keys: list[jwk.JWK] = []
        raw_keys = doc.get("keys")
        for entry in raw_keys if isinstance(raw_keys, list) else []:
            if not isinstance(entry, dict) or entry.get("kty") == "oct":
                continue  # RFC 8725 §3.1: never verify with a symmetric key from a public set
            try:
                key = jwk.JWK(**entry)
            except Exception:  # noqa: S112 - unsupported kty/crv: skip that key, keep the others
                continue
            if key.has_private:
                key = jwk.JWK(**key.export_public(as_dict=True))
            keys.append(key)
        self._keys = keys
        self._expires_at = now + cache_ttl(headers, *self._ttl)

    @staticmethod
    def _select(keys: list[jwk.JWK], kid: str | None, alg: str) -> list[jwk.JWK]:
        usable = [k for k in keys if key_matches_alg(k, alg)]
        if kid is None:
            return usable
        return [k for k in usable if k.get("kid") == kid]

    def keys_for(self, kid: str | None, alg: str) -> list[jwk.JWK]:
        with self._lock:
            now = self._clock()
            if self._keys is None or now >= self._expires_at:
                self._fetch(now)
            found = self._select(self._keys or [], kid, alg)
            if not found and now - self._last_fetch >= self._refetch_interval:
                # Unknown kid: the OP may have rotated keys (OIDC Core 10.1.1). One refetch,
                # rate limited by _refetch_interval.
                self._fetch(now)
                found = self._select(self._keys or [], kid, alg)
            if not found:
                raise LogoutTokenError("unknown_kid", "no matching key in the OP's JWKS")
            return found

    def invalidate(self) -> None:
        """Drop the cache; the next token fetches the JWKS again."""
        with self._lock:
            self._keys = None
            self._expires_at = 0.0


class StaticKeys:
    """A fixed key set (e.g. loaded from configuration), mainly for tests and offline use."""

    def __init__(self, jwks: dict[str, Any] | jwk.JWKSet) -> None:
        ks = jwks if isinstance(jwks, jwk.JWKSet) else jwk.JWKSet.from_json(json.dumps(jwks))
        self._keys = [k for k in ks["keys"] if k.get("kty") != "oct"]

    def keys_for(self, kid: str | None, alg: str) -> list[jwk.JWK]:
        found = JWKSCache._select(self._keys, kid, alg)
        if not found:
            raise LogoutTokenError("unknown_kid", "no matching key")
        return found
