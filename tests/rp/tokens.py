"""Test helpers: signing keys and logout-token builders (real jwcrypto signatures)."""

from __future__ import annotations

import json
import uuid
from functools import cache
from typing import Any

from jwcrypto import jwk, jws

from oidc_logout.rp import BACKCHANNEL_LOGOUT_EVENT

ISSUER_PATH = ""  # the issuer is the loopback OP server's base URL
CLIENT_ID = "rp-client-1"
NOW = 1_700_000_000.0


@cache
def rsa_key(kid: str) -> jwk.JWK:
    return jwk.JWK.generate(kty="RSA", size=2048, kid=kid)


@cache
def ec_key(kid: str) -> jwk.JWK:
    return jwk.JWK.generate(kty="EC", crv="P-256", kid=kid)


def public_jwks(*keys: jwk.JWK) -> dict[str, Any]:
    return {"keys": [k.export_public(as_dict=True) for k in keys]}


def claims(issuer: str, now: float = NOW, **overrides: Any) -> dict[str, Any]:
    """Valid logout-token claims; an override of ``None`` removes the claim."""
    c: dict[str, Any] = {
        "iss": issuer,
        "aud": CLIENT_ID,
        "iat": int(now),
        "exp": int(now) + 120,
        "jti": uuid.uuid4().hex,
        "sub": "user-42",
        "sid": "op-session-1",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    for k, v in overrides.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def sign(payload: dict[str, Any] | str, key: jwk.JWK, alg: str = "RS256", **header: Any) -> str:
    """Compact JWS; header defaults to alg, kid of the key and typ logout+jwt.
    A header override of ``None`` removes that parameter."""
    h: dict[str, Any] = {"alg": alg, "kid": key.get("kid"), "typ": "logout+jwt"}
    for k, v in header.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    body = payload if isinstance(payload, str) else json.dumps(payload)
    s = jws.JWS(body.encode())
    s.allowed_algs = [alg]
    s.add_signature(key, alg=alg, protected=json.dumps(h))
    return s.serialize(compact=True)


def logout_token(
    issuer: str,
    key: jwk.JWK | None = None,
    now: float = NOW,
    alg: str = "RS256",
    header: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    return sign(claims(issuer, now, **overrides), key or rsa_key("k1"), alg, **(header or {}))
