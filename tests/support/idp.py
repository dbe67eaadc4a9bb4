"""Start the demo IdP on a loopback port and drive it as a real OIDC client would."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from oidc_logout.config import Settings
from oidc_logout.demo.idp import create_idp_app
from oidc_logout.provider import Provider
from oidc_logout.rfc7009.fastpath import close_connections

from .servers import LiveServer

PASSWORD = "test-password"


@dataclass
class IdP:
    server: LiveServer
    app: Any
    settings: Settings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def provider(self) -> Provider:
        return self.app.extensions["oidc_logout"].provider

    def stop(self) -> None:
        self.provider.stop_background()
        self.server.stop()
        close_connections(self.provider.engine)  # the revocation fast path's own
        self.provider.engine.dispose()


def start_idp(database_url: str, clients: list[dict[str, Any]] | None = None, **overrides: Any) -> IdP:
    server = LiveServer()
    settings = Settings(
        issuer=server.url, database_url=database_url, dev_mode=True, expiry_sweep_interval=0, **overrides
    )
    app = create_idp_app(settings, password=PASSWORD, clients=clients)
    server.app = app
    server.start()
    return IdP(server, app, settings)


def client_meta(
    client_id: str, *, port: int = 9, secret: str | None = "s3cret-" + "x" * 20, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "client_id": client_id,
        "client_name": client_id,
        "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
        "post_logout_redirect_uris": [f"http://127.0.0.1:{port}/logged-out"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid profile email offline_access",
        "token_endpoint_auth_method": "client_secret_basic" if secret else "none",
    }
    if secret:
        meta["client_secret"] = secret
    meta.update(extra)
    return meta


@dataclass
class Browser:
    """A requests.Session acting as the user's browser (cookies, form posts)."""

    idp_url: str
    http: requests.Session = field(default_factory=requests.Session)

    def login(self, username: str = "alice", password: str = PASSWORD) -> requests.Response:
        page = self.http.get(f"{self.idp_url}/login", timeout=10)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        return self.http.post(
            f"{self.idp_url}/login",
            data={"csrf_token": csrf, "username": username, "password": password, "next": "/account"},
            allow_redirects=False,
            timeout=10,
        )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(
    browser: Browser, meta: dict[str, Any], scope: str = "openid profile", nonce: str | None = None
) -> dict[str, Any]:
    """Run the authorization code flow with PKCE; returns the token response."""
    verifier, challenge = pkce_pair()
    redirect_uri = meta["redirect_uris"][0]
    state = secrets.token_urlsafe(8)
    resp = browser.http.get(
        f"{browser.idp_url}/authorize",
        params={
            "response_type": "code",
            "client_id": meta["client_id"],
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce or secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302, resp.text
    location = resp.headers["Location"]
    assert location.startswith(redirect_uri), location
    q = parse_qs(urlsplit(location).query)
    assert q["state"] == [state]
    code = q["code"][0]
    return exchange_code(browser.idp_url, meta, code, verifier)


def exchange_code(idp_url: str, meta: dict[str, Any], code: str, verifier: str) -> dict[str, Any]:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": meta["redirect_uris"][0],
    }
    auth = None
    if meta.get("client_secret"):
        auth = (meta["client_id"], meta["client_secret"])
    else:
        data["client_id"] = meta["client_id"]
    resp = requests.post(f"{idp_url}/token", data=data, auth=auth, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def refresh(idp_url: str, meta: dict[str, Any], refresh_token: str) -> requests.Response:
    return requests.post(
        f"{idp_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(meta["client_id"], meta["client_secret"]),
        timeout=10,
    )


def introspect(idp_url: str, meta: dict[str, Any], token: str, hint: str | None = None) -> dict[str, Any]:
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    resp = requests.post(
        f"{idp_url}/introspect", data=data, auth=(meta["client_id"], meta["client_secret"]), timeout=10
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def revoke(idp_url: str, meta: dict[str, Any], token: str, hint: str | None = None) -> requests.Response:
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    return requests.post(
        f"{idp_url}/revoke", data=data, auth=(meta["client_id"], meta["client_secret"]), timeout=10
    )
