"""Logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4, with errata: ``exp`` required).

A fresh token with a fresh ``jti`` is minted for EVERY delivery attempt: RPs keep a replay
cache of ``jti`` values (§2.6 step 7 / §2.9 advice), so re-sending the token of a failed
attempt could be rejected as a replay even though the RP never processed it.
"""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from typing import Any

from jwcrypto import jws
from jwcrypto.common import json_encode

from ..keys import LoadedKey

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "LOGOUT_TOKEN_TYP",
    "logout_token_claims",
    "new_jti",
    "sign_logout_token",
]

#: §2.4: the ``events`` claim member that identifies a logout token.
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: §2.4 (errata): "Logout Tokens SHOULD be explicitly typed" with ``typ`` ``logout+jwt``.
LOGOUT_TOKEN_TYP = "logout+jwt"


def new_jti() -> str:
    """A unique token identifier with 192 random bits (>= 128 required for unguessability)."""
    return secrets.token_urlsafe(24)


def logout_token_claims(
    *,
    issuer: str,
    client_id: str,
    sub: str | None,
    sid: str | None,
    now: int,
    lifetime: int,
    jti: str | None = None,
) -> dict[str, Any]:
    """The claim set of one logout token for ``client_id``.

    Raises ValueError when neither ``sub`` nor ``sid`` is known.
    """
    # §2.4: "A Logout Token MUST contain either a sub or a sid Claim, and MAY contain both."
    if not sub and not sid:
        raise ValueError("a logout token needs a sub or a sid")
    if lifetime <= 0:
        raise ValueError("logout token lifetime must be positive")
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,  # §2.4: aud REQUIRED (the RP's client_id)
        "iat": int(now),
        "exp": int(now) + int(lifetime),  # errata: exp REQUIRED; keep it short
        "jti": jti or new_jti(),
        # §2.4: events MUST contain exactly this member, whose value is an empty JSON object.
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    if sub:
        claims["sub"] = sub
    if sid:
        claims["sid"] = sid
    # §2.4: "A Logout Token MUST NOT contain a nonce Claim" - never added here.
    return claims


def sign_logout_token(claims: dict[str, Any], key: LoadedKey) -> str:
    """Sign ``claims`` as a compact JWS with ``key`` (alg = the client's
    id_token_signed_response_alg, §2.4: "signed with the same algorithm as ID Tokens")."""
    if "nonce" in claims:
        raise ValueError("a logout token must not contain a nonce (§2.4)")
    # jwcrypto's signing core directly, with the protected header serialized once per key:
    # jwt.JWT (and jws.JWS underneath it) deep-copy a registry of claim/header definitions
    # for every token, which cost about as much as the RSA signature itself. What JWS would
    # check before signing holds by construction here: the header is our fixed
    # {alg, kid, typ} (no "crit", no "b64": false) and alg is one of SUPPORTED_ALGS, all in
    # jwcrypto's default allowed list (JWSCore refuses any other).
    core = jws.JWSCore(
        key.alg, key.key, _protected_header(key.alg, key.kid), json.dumps(claims, separators=(",", ":"))
    )
    sig = core.sign()
    return f"{sig['protected']}.{sig['payload'].decode('ascii')}.{sig['signature']}"


@lru_cache(maxsize=64)
def _protected_header(alg: str, kid: str) -> str:
    """The JOSE header of a logout token (§2.4 errata: ``typ`` ``logout+jwt``), as JSON."""
    return str(json_encode({"alg": alg, "typ": LOGOUT_TOKEN_TYP, "kid": kid}))
