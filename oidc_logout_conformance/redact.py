"""Redaction: reports show decoded JWT headers and claims, never a compact token, a
signature, a secret, an authorization code, an access or refresh token, or a cookie."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
SENSITIVE_KEYS = {
    "access_token",
    "refresh_token",
    "id_token",
    "logout_token",
    "id_token_hint",
    "code",
    "client_secret",
    "password",
    "csrf_token",
    "token",
    "authorization",
    "cookie",
    "set-cookie",
    "code_verifier",
    "registration_access_token",
    "secret",
}


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def decode_jwt(token: str) -> dict[str, Any]:
    """Header and claims of a compact JWS, unverified, for evidence (no signature)."""
    parts = token.split(".")
    out: dict[str, Any] = {"signature": REDACTED}
    try:
        out["header"] = _b64json(parts[0])
    except Exception:
        out["header"] = "<undecodable>"
    try:
        out["claims"] = _b64json(parts[1]) if len(parts) > 1 else "<missing>"
    except Exception:
        out["claims"] = "<undecodable>"
    if len(parts) != 3:
        out["note"] = f"not a compact JWS ({len(parts)} parts)"
    return out


class Redactor:
    """Scrubs evidence. Every secret value the runner handles is registered; any occurrence
    of it (or of anything shaped like a compact JWT) is replaced."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def register(self, *values: object) -> None:
        for v in values:
            if isinstance(v, str) and len(v) >= 6:
                self._secrets.add(v)

    def scrub_text(self, text: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, REDACTED)
        return JWT_RE.sub("[REDACTED JWT]", text)

    def scrub_url(self, url: str) -> str:
        try:
            parts = urlsplit(url)
        except ValueError:
            return self.scrub_text(url)
        if not parts.query:
            return self.scrub_text(url)
        q = [
            (k, REDACTED if k.lower() in SENSITIVE_KEYS else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        return self.scrub_text(urlunsplit(parts._replace(query=urlencode(q, safe="[]"))))

    def scrub(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for k, v in obj.items():
                key = str(k)
                if key.lower() in SENSITIVE_KEYS and isinstance(v, (str, bytes)):
                    out[key] = REDACTED
                else:
                    out[key] = self.scrub(v)
            return out
        if isinstance(obj, (list, tuple)):
            return [self.scrub(v) for v in obj]
        if isinstance(obj, bytes):
            obj = obj.decode("utf-8", "replace")
        if isinstance(obj, str):
            if obj.startswith(("http://", "https://")):
                return self.scrub_url(obj)
            return self.scrub_text(obj)
        return obj

    def form(self, body: str) -> dict[str, Any]:
        """A form body for evidence: sensitive values redacted, JWTs decoded."""
        out: dict[str, Any] = {}
        for k, v in parse_qsl(body, keep_blank_values=True):
            if JWT_RE.fullmatch(v):
                out.setdefault(k, []).append(decode_jwt(v))
            elif k.lower() in SENSITIVE_KEYS:
                out.setdefault(k, []).append(REDACTED)
            else:
                out.setdefault(k, []).append(v)
        return out

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: (REDACTED if k.lower() in SENSITIVE_KEYS else v) for k, v in headers.items()}
