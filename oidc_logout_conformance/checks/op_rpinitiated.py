"""RP-Initiated Logout 1.0 (§2 request and id_token_hint validation, §3 post-logout
redirection with exact-match URIs and state, §4 errors never redirect)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from ..adapters import parse_html
from ..opclient import Hop


@dataclass
class LogoutOutcome:
    """What an end_session request led to (redirects followed inside the OP)."""

    hops: list[Hop]
    pages: list[requests.Response]
    final: requests.Response | None
    redirect: str | None  # a Location into the RP's URIs, if any
    page_targets: list[str] = field(default_factory=list)  # meta refresh / link targets on pages

    def targets(self) -> list[str]:
        return ([self.redirect] if self.redirect else []) + self.page_targets

    def status(self) -> int | None:
        return (
            self.final.status_code
            if self.final is not None
            else (self.hops[-1].status if self.hops else None)
        )

    def evidence(self) -> dict[str, Any]:
        return {
            "hops": [
                {"method": h.method, "url": h.url, "status": h.status, "location": h.location}
                for h in self.hops
            ],
            "final_status": self.status(),
            "redirect_targets": self.targets(),
        }


def page_redirect_targets(pages: list[requests.Response]) -> list[str]:
    """URLs a logged-out page sends the user agent to without script: meta refresh and links."""
    out: list[str] = []
    for page in pages:
        parsed = parse_html(page.text)
        for meta in parsed.metas:
            if meta.get("http-equiv", "").lower() == "refresh" and "url=" in meta.get("content", "").lower():
                content = meta["content"]
                url = content[content.lower().index("url=") + 4 :].strip().strip("'\"")
                out.append(urljoin(page.url, url))
        for link in parsed.links:
            if link.get("href", "").startswith(("http://", "https://")):
                out.append(urljoin(page.url, link["href"]))
    return out


def goes_to(target: str, uri: str) -> bool:
    """Does ``target`` point at ``uri`` (same scheme, authority and path; query ignored)?"""
    a, b = urlsplit(target), urlsplit(uri)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


def state_of(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query).get("state", [])


def forge_hint(id_token: str) -> str:
    """The ID token with one claim changed and the original signature kept (as the OpenID
    Foundation's modified-id-token-hint test does): a correct OP must refuse it."""
    header, payload, sig = id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(claims.get("sub", "")) + "-forged"
    forged = (
        base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    )
    return f"{header}.{forged}.{sig}"


def foreign_hint(claims: dict[str, Any]) -> str:
    """The ID token's claims signed by a key the runner made up (kid unknown to the OP), as
    the OpenID Foundation's bad-id-token-hint test does ("an id_token_hint signed by the test
    suite"): the OP did not issue it and must refuse it."""
    import secrets

    from jwcrypto import jwk, jws

    key = jwk.JWK.generate(kty="RSA", size=2048, kid=f"conformance-{secrets.token_hex(4)}")
    s = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    s.add_signature(
        key, alg="RS256", protected=json.dumps({"alg": "RS256", "typ": "JWT", "kid": key.get("kid")})
    )
    return str(s.serialize(compact=True))


def confirmation_forms(pages: list[requests.Response], end_session_url: str) -> list[Any]:
    """Forms on the pages that submit to the end_session endpoint (a logout confirmation)."""
    out = []
    for page in pages:
        for form in parse_html(page.text).forms:
            if urlsplit(urljoin(page.url, form.action or page.url)).path == urlsplit(end_session_url).path:
                out.append(form)
    return out
