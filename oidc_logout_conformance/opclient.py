"""The runner acting as OIDC clients of the OP under test: registration, the code flow with
PKCE through a :class:`~oidc_logout_conformance.adapters.LoginAdapter`, token, refresh, revocation,
introspection and end_session calls. Every secret it handles is registered for redaction."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from .adapters import (
    Hints,
    LoginAdapter,
    auto_submits,
    choose_button,
    form_data,
    meta_refresh,
    parse_html,
    script_redirect,
    submit,
)
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
    """The End-User's user agent: a cookie jar that follows redirects one hop at a time and
    walks the OP's interaction pages (login, consent, interstitials, logout confirmation)."""

    def __init__(self, op: OPConnection) -> None:
        self.op = op
        self.http = requests.Session()
        setattr(self.http, "allow_remote", op.allow_remote)  # noqa: B010 - read by adapters.submit
        self.last_stop = ""  # why the last walk ended on a page (for the report)

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
        max_hops: int = 25,
    ) -> tuple[requests.Response | None, str | None, list[Hop], list[requests.Response]]:
        """Follow redirects until one goes to a URL starting with a ``stop_prefixes`` entry
        (returned, not fetched) or a page is reached that the walk does not act on.

        ``login``: an authorization request. Pages are handled in turn by the login adapter's
        ``interact`` (if it has one), the login adapter on a password form (once per walk),
        meta refresh, a simple script redirect, a self-submitting form (form_post), and any
        other form with a button that does not decline (consent, interstitials), each form
        at most twice. ``confirm_url``: a logout to confirm: the same, except that there is
        no login, and one form (posting anywhere, its button possibly outside it via
        ``form=``) is submitted once. Neither: no page is acted on (negative requests).
        Returns (final page or None, stop URL or None, hops, every HTML page seen)."""
        hops: list[Hop] = []
        pages: list[requests.Response] = []
        purpose = "authorize" if login else "logout" if confirm_url else ""
        state: dict[str, Any] = {"logged_in": False, "submitted": {}, "confirmed": False}
        self.last_stop = ""
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
            if "html" not in resp.headers.get("Content-Type", ""):
                self.last_stop = (
                    f"HTTP {resp.status_code} {resp.headers.get('Content-Type', '')} at {resp.url}"
                )
                return resp, None, hops, pages
            pages.append(resp)
            if not purpose:
                return resp, None, hops, pages
            nxt = self._interact(resp, purpose, state, stop_prefixes)
            if isinstance(nxt, str):
                return None, nxt, hops, pages
            if nxt is None:
                return resp, None, hops, pages
            resp = nxt
        raise FlowError(f"more than {max_hops} redirects and pages", step="walking the OP's pages")

    def _interact(
        self,
        page: requests.Response,
        purpose: str,
        state: dict[str, Any],
        stop: tuple[str, ...],
    ) -> requests.Response | str | None:
        """The next response after acting on ``page``, a stop URL, or None (nothing to do)."""
        adapter = self.op.login_adapter
        interact = getattr(adapter, "interact", None)
        if interact is not None:
            out = interact(self.http, page, purpose)
            if out is not None:
                return cast(requests.Response, out)
        parsed = parse_html(page.text)
        password = [f for f in parsed.forms if f.has_password]
        if password and purpose == "authorize":
            if state["logged_in"]:
                self.last_stop = (
                    f"the login page came back after logging in (HTTP {page.status_code} at {page.url})"
                )
                return None
            state["logged_in"] = True
            return adapter.login(self.http, page)
        if password:
            self.last_stop = f"a login page during logout at {page.url}"
            return None
        target = meta_refresh(parsed, page.url) or script_redirect(parsed, page.url)
        if target:
            if target.startswith(stop):
                return target
            return self.get(target)
        hints: Hints = getattr(adapter, "hints", None) or Hints()
        if purpose == "logout" and (state["confirmed"] or parsed.iframes):
            return None  # confirmed once already, or a logged-out page (front-channel iframes)
        for form in parsed.forms:
            key = f"{urlsplit(page.url).path} -> {form.action} {form.id}"
            if state["submitted"].get(key, 0) >= 2:
                continue
            self_submitting = auto_submits(parsed) and form.only_hidden
            button = choose_button(form, hints)
            if button is None and not self_submitting and form.buttons:
                continue  # every button declines
            if button is None and not self_submitting and not form.only_hidden:
                continue
            state["submitted"][key] = state["submitted"].get(key, 0) + 1
            if purpose == "logout":
                state["confirmed"] = True
            return submit(self.http, page, form, form_data(form, hints, button))
        self.last_stop = f"HTTP {page.status_code} at {page.url}: no form, redirect or script to follow"
        return None


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

    def post_form(
        self, endpoint: str, client: OPClient | None, data: dict[str, str], timeout: float = TIMEOUT
    ) -> requests.Response:
        url = self._url(endpoint)
        auth = self._auth(client, data) if client is not None else None
        # a fresh connection: this may run in a receiver thread while the main thread uses self.http
        return requests.post(url, data=data, auth=auth, timeout=timeout)

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
        # A consent page posting back to the authorization endpoint is approved once, as the
        # End-User would (Core 1.0 §3.1.2.4); its first button is the approval.
        page, stop, hops, _ = browser.walk(
            resp,
            (client.redirect_uri,),
            login=prompt != "none",
            confirm_url=self._url("authorization_endpoint"),
        )
        out: dict[str, Any] = {"hops": hops, "verifier": verifier, "nonce": nonce}
        if stop is None:
            out["stopped"] = browser.last_stop or (
                f"HTTP {page.status_code if page is not None else '?'} at {page.url if page is not None else '?'}"
            )
            out["step"] = f"authorization request for {client.client_id}: {len(hops)} hops, stopped at " + (
                page.url if page is not None else "?"
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
