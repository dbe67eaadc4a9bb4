"""A sample relying party built on :mod:`oidc_logout.rp`: code flow with PKCE, server-side
sessions, and back-/front-channel logout endpoints that end those sessions."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from flask import Flask, Response, redirect, request, session
from jwcrypto import jwt
from markupsafe import escape
from werkzeug.wrappers import Response as BaseResponse

from ..rp import (
    DiscoveryClient,
    JWKSCache,
    LogoutTokenValidator,
    MemorySessionIndex,
    MemorySessionStore,
    build_end_session_url,
    revoke_refresh_token,
)
from ..rp.flask import RPLogout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RPConfig:
    name: str
    client_id: str
    client_secret: str
    base_url: str
    issuer: str
    backchannel: bool = True
    frontchannel: bool = False

    def client_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "client_name": self.name,
            "redirect_uris": [f"{self.base_url}/callback"],
            "post_logout_redirect_uris": [f"{self.base_url}/logged-out"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "openid profile email",
            "token_endpoint_auth_method": "client_secret_basic",
        }
        if self.backchannel:
            meta["backchannel_logout_uri"] = f"{self.base_url}/oidc/backchannel-logout"
            meta["backchannel_logout_session_required"] = True
        if self.frontchannel:
            meta["frontchannel_logout_uri"] = f"{self.base_url}/oidc/frontchannel-logout"
            meta["frontchannel_logout_session_required"] = True
        return meta


#: The demo clients register no id_token_signed_response_alg, so the OP uses RS256 for ID and
#: logout tokens (Core §3.1.3.7 step 7, Back-Channel Logout §2.6 step 3).
ID_TOKEN_ALG = "RS256"


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}}</style>
</head><body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> Response:
    resp = Response(PAGE.format(title=escape(title), body=body), status=status)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    )
    return resp


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirect).

    Only ``/``-rooted paths are kept. ``//evil`` (scheme-relative) and ``/\\evil`` (browsers
    read ``\\`` as ``/``) name another host, and control characters or whitespace can be
    stripped by the browser into one of those, so all of them are refused.
    """
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def create_rp_app(cfg: RPConfig, *, extra_home: Callable[[], str] | None = None) -> Flask:
    """The sample RP; ``extra_home`` returns more HTML for its home page (trusted, escaped)."""
    app = Flask(f"oidc_logout.demo.rp.{cfg.client_id}")
    app.secret_key = secrets.token_urlsafe(32)
    # Every demo app runs on 127.0.0.1; cookies ignore ports, so each needs its own name.
    app.config["SESSION_COOKIE_NAME"] = f"rp_{cfg.client_id.replace('-', '_')}"
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    discovery = DiscoveryClient(cfg.issuer)
    keys = JWKSCache(discovery=discovery)
    validator = LogoutTokenValidator(
        issuer=cfg.issuer, client_id=cfg.client_id, keys=keys, allowed_algs=[ID_TOKEN_ALG]
    )
    rp = RPLogout(
        app,
        validator=validator,
        session_index=MemorySessionIndex(),
        session_store=MemorySessionStore(),
        frontchannel=cfg.frontchannel,
        frontchannel_session_required=True,
    )
    http = requests.Session()

    @app.get("/")
    def home() -> BaseResponse:
        user = session.get("user")
        if user:
            body = (
                f"<p>Signed in as <strong id='user'>{escape(user)}</strong> "
                f"(OP session <code>{escape(str(session.get('sid'))[:8])}…</code>).</p>"
                "<p><a href='/protected'>Protected page</a> · <a id='logout' href='/logout'>Sign out everywhere</a></p>"
            )
        else:
            body = "<p id='anonymous'>Not signed in.</p><p><a id='login' href='/login'>Sign in</a></p>"
        if extra_home is not None:
            body += extra_home()
        return _page(cfg.name, body)

    @app.get("/protected")
    def protected() -> BaseResponse:
        if not session.get("user"):
            return redirect("/login?next=/protected")
        return _page(cfg.name, f"<p id='protected'>Secret page of {escape(session['user'])}.</p>")

    @app.get("/login")
    def login() -> BaseResponse:
        meta = discovery.get()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        session["flow"] = {
            "verifier": verifier,
            "state": state,
            "nonce": nonce,
            "next": safe_next(request.args.get("next")),
        }
        params = {
            "response_type": "code",
            "client_id": cfg.client_id,
            "redirect_uri": f"{cfg.base_url}/callback",
            "scope": "openid profile email",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return redirect(f"{meta.authorization_endpoint}?{urlencode(params)}")

    @app.get("/callback")
    def callback() -> BaseResponse:
        flow = session.pop("flow", None)
        if not flow or request.args.get("state") != flow["state"] or "code" not in request.args:
            return _page(cfg.name, "<p>Sign-in failed: bad state or no code.</p>", 400)
        meta = discovery.get()
        resp = http.post(
            meta.token_endpoint or f"{cfg.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": request.args["code"],
                "redirect_uri": f"{cfg.base_url}/callback",
                "code_verifier": flow["verifier"],
            },
            auth=(cfg.client_id, cfg.client_secret),
            timeout=10,
        )
        if resp.status_code != 200:
            return _page(cfg.name, "<p>Sign-in failed at the token endpoint.</p>", 400)
        tokens = resp.json()
        try:
            header = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[0] + "=="))
            # Core §3.1.3.7 step 7: the client's registered alg (RS256 when unspecified), never
            # the one the token names; the keys come from the same JWKS cache as for logout tokens.
            (key,) = keys.keys_for(header.get("kid"), ID_TOKEN_ALG)[:1]
            claims = json.loads(
                jwt.JWT(
                    jwt=tokens["id_token"],
                    key=key,
                    algs=[ID_TOKEN_ALG],
                    check_claims={"iss": cfg.issuer, "aud": cfg.client_id, "exp": None},
                ).claims
            )
        except Exception:
            return _page(cfg.name, "<p>Sign-in failed: the ID token did not validate.</p>", 400)
        if claims.get("nonce") != flow["nonce"]:
            return _page(cfg.name, "<p>Sign-in failed: nonce mismatch.</p>", 400)
        rp.register_login(sub=claims["sub"], sid=claims.get("sid"))
        session["user"] = claims["sub"]
        session["sid"] = claims.get("sid")
        session["id_token"] = tokens["id_token"]
        session["refresh_token"] = tokens.get("refresh_token")
        return redirect(safe_next(flow.get("next")))

    @app.get("/logout")
    def logout() -> BaseResponse:
        id_token = session.get("id_token")
        refresh_token = session.get("refresh_token")
        rp.logout_local()
        meta = discovery.get()
        if refresh_token:
            try:
                revoke_refresh_token(
                    meta, refresh_token, client_id=cfg.client_id, client_secret=cfg.client_secret
                )
            except Exception:  # best effort: the OP's logout below ends the grant anyway
                log.warning("revoking the refresh token at sign-out failed", exc_info=False)
        state = secrets.token_urlsafe(12)
        return redirect(
            build_end_session_url(
                meta,
                id_token_hint=id_token,
                post_logout_redirect_uri=f"{cfg.base_url}/logged-out",
                state=state,
                client_id=cfg.client_id,
            )
        )

    @app.get("/logged-out")
    def logged_out() -> BaseResponse:
        state = request.args.get("state", "")
        return _page(
            cfg.name,
            f"<p id='logged-out'>Signed out.</p><p>state: <code id='state'>{escape(state)}</code></p>"
            "<p><a href='/'>Home</a></p>",
        )

    return app


__all__ = ["ID_TOKEN_ALG", "PAGE", "RPConfig", "create_rp_app", "safe_next"]
