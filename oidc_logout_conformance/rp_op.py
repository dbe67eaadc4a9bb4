"""The runner acting as the OP for the ``rp`` profile: its own RSA signing key, issuer,
discovery document and JWKS served on a loopback port, and a logout-token minter that can
produce every kind of invalid token the rp checks need."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from jwcrypto import jwk, jws

from .receivers import Captured, CaptureServer

EVENT = "http://schemas.openid.net/event/backchannel-logout"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RunnerOP:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.key = jwk.JWK.generate(
            kty="RSA", size=2048, kid=f"conformance-{secrets.token_hex(4)}", alg="RS256", use="sig"
        )
        self._stranger: jwk.JWK | None = None
        self.server = CaptureServer(host, port, responder=self._respond)
        self.issuer = self.server.base_url

    @property
    def stranger_key(self) -> jwk.JWK:
        """A key the OP never published (for the unknown-kid check)."""
        if self._stranger is None:
            self._stranger = jwk.JWK.generate(kty="RSA", size=2048, kid=f"unknown-{secrets.token_hex(4)}")
        return self._stranger

    def discovery(self) -> dict[str, Any]:
        i = self.issuer
        return {
            "issuer": i,
            "jwks_uri": f"{i}/jwks",
            "authorization_endpoint": f"{i}/authorize",
            "token_endpoint": f"{i}/token",
            "end_session_endpoint": f"{i}/end_session",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.export_public(as_dict=True)]}

    def _respond(self, req: Captured) -> tuple[int, dict[str, str], bytes]:
        if req.path == "/.well-known/openid-configuration":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.discovery()).encode()
        if req.path == "/jwks":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.jwks()).encode()
        return 404, {"Content-Type": "text/plain"}, b"not found"

    def start(self) -> RunnerOP:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    # -- tokens -------------------------------------------------------------------------
    def claims(self, client_id: str, sub: str | None, sid: str | None, **overrides: Any) -> dict[str, Any]:
        """Valid logout-token claims; an override of ``None`` removes the claim."""
        now = int(time.time())
        c: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
            "events": {EVENT: {}},
        }
        if sub is not None:
            c["sub"] = sub
        if sid is not None:
            c["sid"] = sid
        for k, v in overrides.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def sign(
        self,
        claims: dict[str, Any],
        *,
        alg: str = "RS256",
        key: jwk.JWK | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        h: dict[str, Any] = {"alg": alg, "typ": "logout+jwt", "kid": (key or self.key).get("kid")}
        for k, v in (header or {}).items():
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        payload = json.dumps(claims, separators=(",", ":")).encode()
        if alg == "none":
            h.pop("kid", None)
            return f"{b64(json.dumps(h).encode())}.{b64(payload)}."
        if alg.startswith("HS"):
            # RFC 8725 §2.1 algorithm confusion: the OP's *public* key used as the HMAC secret.
            secret = self.key.export_to_pem(private_key=False)
            key = jwk.JWK(kty="oct", k=b64(secret))
        s = jws.JWS(payload)
        s.add_signature(key or self.key, alg=alg, protected=json.dumps(h))
        return str(s.serialize(compact=True))

    @staticmethod
    def break_signature(token: str) -> str:
        header, payload, sig = token.split(".")
        i = len(sig) // 2
        flipped = "A" if sig[i] != "A" else "B"
        return f"{header}.{payload}.{sig[:i]}{flipped}{sig[i + 1 :]}"
