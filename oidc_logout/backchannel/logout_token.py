"""Logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4, with errata: ``exp`` required).

A fresh token with a fresh ``jti`` is minted for EVERY delivery attempt: RPs keep a replay
cache of ``jti`` values (§2.6 step 7 / §2.9 advice), so re-sending the token of a failed
attempt could be rejected as a replay even though the RP never processed it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from jwcrypto import jwt

from ..keys import LoadedKey

__all__ = ["BACKCHANNEL_LOGOUT_EVENT", "LOGOUT_TOKEN_TYP", "logout_token_claims",
           "new_jti", "sign_logout_token"]

#: §2.4: the ``events`` claim member that identifies a logout token.
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: §2.4 (errata): "Logout Tokens SHOULD be explicitly typed" with ``typ`` ``logout+jwt``.
LOGOUT_TOKEN_TYP = "logout+jwt"


def new_jti() -> str:
    """A unique token identifier with 192 random bits (>= 128 required for unguessability)."""
    return secrets.token_urlsafe(24)


def logout_token_claims(*, issuer: str, client_id: str, sub: str | None, sid: str | None,
                        now: int, lifetime: int, jti: str | None = None) -> dict[str, Any]:
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
    header = {"alg": key.alg, "typ": LOGOUT_TOKEN_TYP, "kid": key.kid}
    token = jwt.JWT(header=header, claims=json.dumps(claims, separators=(",", ":")))
    token.make_signed_token(key.key)
    return str(token.serialize())
