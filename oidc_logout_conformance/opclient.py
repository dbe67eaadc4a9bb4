"""The runner acting as OIDC clients of the OP under test: registration, the code flow with
PKCE through a :class:`~oidc_logout_conformance.adapters.LoginAdapter`, token, refresh, revocation,
introspection and end_session calls. Every secret it handles is registered for redaction."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from .adapters import LoginAdapter, parse_html
from .net import check_target
from .redact import Redactor, decode_jwt

TIMEOUT = 15


class FlowError(RuntimeError):
    """The OP did not let a flow complete; ``step`` names where it stopped (the report's
    core-scenario table shows it)."""

    def __init__(self, message: str, step: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.recorded = False  # already recorded against a core scenario


@dataclass
class OPClient:
    client_id: str
    client_secret: str | None
    metadata: dict[str, Any]
    redirect_uri: str
    post_logout_redirect_uri: str
    backchannel_logout_uri: str | None
    frontchannel_logout_uri: str | None

    @property
    def auth_method(self) -> str:
        return str(self.metadata.get("token_endpoint_auth_method") or "client_secret_basic")


@dataclass
class Tokens:
    client: OPClient
    raw: dict[str, Any]
    id_token: str | None = None
    id_header: dict[str, Any] = field(default_factory=dict)
    id_claims: dict[str, Any] = field(default_factory=dict)

    @property
    def refresh_token(self) -> str | None:
        return self.raw.get("refresh_token")

    @property
    def access_token(self) -> str | None:
        return self.raw.get("access_token")


@dataclass
class Hop:
    method: str
    url: str
    status: int
    location: str | None


class Browser:
    """The End-User's user agent: a cookie jar that follows redirects one hop at a time."""

    def __init__(self, op: OPConnection) -> None:
        self.op = op
        self.http = requests.Session()
        self.logged_in = False

    def get(self, url: str, **params: Any) -> requests.Response:
        check_target(url, self.op.allow_remote)
        return self.http.get(url, params=params or None, allow_redirects=False, timeout=TIMEOUT)

    def walk(
        self,
        resp: requests.Response,
        stop_prefixes: tuple[str, ...],
        *,
        login: bool = True,
        confirm_url: str | None = None,
        max_hops: int = 15,
    ) -> tuple[requests.Response | None, str | None, list[Hop], list[requests.Response]]:
        """Follow redirects until one goes to a URL starting with a ``stop_prefixes`` entry
        (returned, not fetched) or a page is reached. A login page is handled by the login
        adapter once; a logout confirmation form aimed at ``confirm_url`` is submitted once.
        Returns (final page or None, stop URL or None, hops, every HTML page seen)."""
        hops: list[Hop] = []
        pages: list[requests.Response] = []
        confirmed = False
        for _ in range(max_hops):
            location = resp.headers.get("Location") if resp.is_redirect else None
            hops.append(
                Hop(
                    resp.request.method or "GET",
                    resp.url,
                    resp.status_code,
                    urljoin(resp.url, location) if location else None,
                )
            )
            if location:
                target = urljoin(resp.url, location)
                if target.startswith(stop_prefixes):
                    return None, target, hops, pages
                resp = self.get(target)
                continue
            if "html" in resp.headers.get("Content-Type", ""):
                pages.append(resp)
                parsed = parse_html(resp.text)
                has_password = any(t == "password" for f in parsed.forms for _, t, _ in f.inputs)
                if has_password and login and not self.logged_in:
                    self.logged_in = True
                    resp = self.op.login_adapter.login(self.http, resp)
                    continue
                if confirm_url and not confirmed:
                    forms = [
                        f
                        for f in parsed.forms
                        if urlsplit(urljoin(resp.url, f.action or resp.url)).path
                        == urlsplit(confirm_url).path
                    ]
                    if forms:
                        confirmed = True
                        resp = self._submit(resp, forms[0])
                        continue
            return resp, None, hops, pages
        raise FlowError(f"more than {max_hops} redirects")

    def _submit(self, page: requests.Response, form: Any) -> requests.Response:
        data: dict[str, str] = {}
        submit_done = False
        for name, typ, value in form.inputs:
            if typ in ("submit", "button"):
                if not submit_done:
                    data[name] = value
                    submit_done = True
            elif typ not in ("checkbox", "radio") or value:
                data[name] = value
        url = urljoin(page.url, form.action or page.url)
        check_target(url, self.op.allow_remote)
        if form.method == "post":
            return self.http.post(url, data=data, allow_redirects=False, timeout=TIMEOUT)
        return self.http.get(url, params=data, allow_redirects=False, timeout=TIMEOUT)


class OPConnection:
    def __init__(
        self,
        issuer: str,
        discovery: dict[str, Any],
        login_adapter: LoginAdapter,
        redactor: Redactor,
        allow_remote: bool = False,
        scope: str = "openid",
        prompt: str = "",
    ) -> None:
        self.prompt = prompt
        self.issuer = issuer
        self.discovery = discovery
        self.login_adapter = login_adapter
        self.redactor = redactor
        self.allow_remote = allow_remote
        self.scope = scope
        self.http = requests.Session()

    def endpoint(self, name: str) -> str | None:
        value = self.discovery.get(name)
        return value if isinstance(value, str) and value else None

    def _url(self, name: str) -> str:
        url = self.endpoint(name)
        if not url:
            raise FlowError(f"the OP advertises no {name}")
        return check_target(url, self.allow_remote)

    # -- client authentication -------------------------------------------------------
    def _auth(self, client: OPClient, data: dict[str, str]) -> tuple[str, str] | None:
        if client.auth_method == "client_secret_post":
            data["client_id"] = client.client_id
            data["client_secret"] = client.client_secret or ""
            return None
        if client.auth_method == "none" or not client.client_secret:
            data["client_id"] = client.client_id
            return None
        return (client.client_id, client.client_secret)

    def post_form(self, endpoint: str, client: OPClient | None, data: dict[str, str]) -> requests.Response:
        url = self._url(endpoint)
        auth = self._auth(client, data) if client is not None else None
        return self.http.post(url, data=data, auth=auth, timeout=TIMEOUT)

    # -- registration ----------------------------------------------------------------
    def register(self, metadata: dict[str, Any]) -> requests.Response:
        url = self._url("registration_endpoint")
        return self.http.post(url, json=metadata, timeout=TIMEOUT)

    # -- code flow -------------------------------------------------------------------
    def authorize(
        self, browser: Browser, client: OPClient, prompt: str | None = None, scope: str | None = None
    ) -> dict[str, Any]:
        """Run an authorization request; returns {"code"|"error"|"stopped": ..., "hops": ...}."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": client.redirect_uri,
            "scope": scope or self.scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        prompt = prompt if prompt is not None else self.prompt
        if prompt:
            params["prompt"] = prompt
        resp = browser.get(self._url("authorization_endpoint"), **params)
        page, stop, hops, _ = browser.walk(resp, (client.redirect_uri,), login=prompt != "none")
        out: dict[str, Any] = {"hops": hops, "verifier": verifier, "nonce": nonce}
        if stop is None:
            out["stopped"] = (
                f"HTTP {page.status_code if page is not None else '?'} at {page.url if page is not None else '?'}"
            )
            return out
        q = parse_qs(urlsplit(stop).query)
        if q.get("code"):
            self.redactor.register(q["code"][0])
            if q.get("state") != [state]:
                out["state_mismatch"] = True
            out["code"] = q["code"][0]
        else:
            out["error"] = (q.get("error") or ["<none>"])[0]
        return out

    def login_and_authorize(
        self, browser: Browser, client: OPClient, prompt: str | None = None, scope: str | None = None
    ) -> Tokens:
        res = self.authorize(browser, client, prompt=prompt, scope=scope)
        if "code" not in res:
            raise FlowError(
                f"authorization for {client.client_id} did not return a code: "
                f"{res.get('error') or res.get('stopped')}",
                step=res.get("step") or f"authorization request for {client.client_id}",
            )
        data = {
            "grant_type": "authorization_code",
            "code": res["code"],
            "code_verifier": res["verifier"],
            "redirect_uri": client.redirect_uri,
        }
        resp = self.post_form("token_endpoint", client, data)
        if resp.status_code != 200:
            raise FlowError(
                f"token request for {client.client_id} answered {resp.status_code}: {resp.text[:300]}",
                step=f"token request for {client.client_id}",
            )
        body = resp.json()
        for key in ("access_token", "refresh_token", "id_token"):
            self.redactor.register(body.get(key))
        tokens = Tokens(client, body)
        if body.get("id_token"):
            tokens.id_token = body["id_token"]
            decoded = decode_jwt(body["id_token"])
            header, claims = decoded.get("header"), decoded.get("claims")
            tokens.id_header = header if isinstance(header, dict) else {}
            tokens.id_claims = claims if isinstance(claims, dict) else {}
        return tokens

    def refresh(self, client: OPClient, refresh_token: str) -> requests.Response:
        return self.post_form(
            "token_endpoint", client, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    def introspect(self, client: OPClient | None, token: str) -> requests.Response:
        return self.post_form("introspection_endpoint", client, {"token": token})

    def revoke(self, client: OPClient, token: str, hint: str | None = None) -> requests.Response:
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        return self.post_form("revocation_endpoint", client, data)
