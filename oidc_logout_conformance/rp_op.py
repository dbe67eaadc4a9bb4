"""The runner acting as the OP for the ``rp`` profile, on a loopback port: its own RSA
signing key, issuer, discovery document and JWKS; a working sign-in (authorization endpoint
that approves at once, token endpoint with PKCE, ID tokens with ``sid``) so that any RP can
log a user in through it; and a logout-token minter that can produce every kind of invalid
token the rp checks need.

Who signs in: the End-User's OP session is the cookie :data:`SESSION_COOKIE`. The session
adapter opens a session for the ``sub`` and ``sid`` a check needs (:meth:`RunnerOP.open_session`)
and carries its cookie; a user agent without one is signed in as the test user with a fresh
OP session (a new ``sid``), which it then keeps."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

from jwcrypto import jwk, jws

from .net import is_loopback
from .receivers import Captured, CaptureServer

EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: The OP session cookie of the runner's OP (host-only, path /).
SESSION_COOKIE = "conformance_op_session"
RESPONSE_TYPES = ("code", "id_token", "code id_token")
Response = tuple[int, dict[str, str], bytes]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def left_hash(value: str) -> str:
    """Core §3.1.3.6 / §3.3.2.11: base64url of the left half of the SHA-256 of the ASCII value
    (``at_hash``, ``c_hash`` for RS256)."""
    return b64(hashlib.sha256(value.encode("ascii")).digest()[:16])


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: ``code_challenge = BASE64URL(SHA256(ASCII(code_verifier)))``."""
    return b64(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class RegisteredClient:
    """The RP under test as a client of the runner's OP. No secret: a public client (PKCE
    required for code). No redirect URIs: any loopback redirect URI is accepted."""

    client_id: str
    client_secret: str | None = None
    redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True)
class OPSession:
    sub: str
    sid: str
    auth_time: int


@dataclass(frozen=True)
class CodeGrant:
    client_id: str
    redirect_uri: str
    session: OPSession
    nonce: str | None
    code_challenge: str | None
    scope: str
    expires: float


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _json(status: int, body: dict[str, Any], **headers: str) -> Response:
    return (
        status,
        {"Content-Type": "application/json", "Pragma": "no-cache", **headers},
        json.dumps(body).encode(),
    )


def _page(status: int, text: str) -> Response:
    body = f"<!doctype html><title>conformance OP</title><p>{html.escape(text)}</p>"
    return status, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


def _cookie(req: Captured, name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(req.header("Cookie") or "")
    except CookieError:
        return None
    morsel = jar.get(name)
    return None if morsel is None else morsel.value


def _params(req: Captured) -> dict[str, str]:
    """Request parameters (query, and the form body of a POST); a repeated one is an error
    (RFC 6749 §3.1: parameters MUST NOT be included more than once)."""
    raw = dict(req.query)
    if req.method == "POST" and "x-www-form-urlencoded" in (req.header("Content-Type") or ""):
        for k, v in parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True).items():
            raw.setdefault(k, []).extend(v)
    repeated = [k for k, v in raw.items() if len(v) > 1]
    if repeated:
        raise OAuthError("invalid_request", f"parameter repeated: {', '.join(sorted(repeated))}")
    return {k: v[0] for k, v in raw.items()}


class RunnerOP:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, test_user: str = "conformance-user") -> None:
        self.key = jwk.JWK.generate(
            kty="RSA", size=2048, kid=f"conformance-{secrets.token_hex(4)}", alg="RS256", use="sig"
        )
        self._stranger: jwk.JWK | None = None
        self.server = CaptureServer(host, port, responder=self._respond)
        self.issuer = self.server.base_url
        self.test_user = test_user
        self.clients: dict[str, RegisteredClient] = {}
        self.sessions: dict[str, OPSession] = {}  # OP session cookie value -> session
        self.codes: dict[str, CodeGrant] = {}
        #: (client_id, sub, sid) of every ID token issued, in order
        self.issued: list[tuple[str, str, str]] = []

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
            "scopes_supported": ["openid"],
            "response_types_supported": list(RESPONSE_TYPES),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "grant_types_supported": ["authorization_code", "implicit"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            "frontchannel_logout_supported": True,
            "frontchannel_logout_session_supported": True,
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.export_public(as_dict=True)]}

    def _respond(self, req: Captured) -> Response:
        if req.path == "/.well-known/openid-configuration":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.discovery()).encode()
        if req.path == "/jwks":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.jwks()).encode()
        try:
            if req.path == "/authorize" and req.method in ("GET", "POST"):
                return self._authorize(req)
            if req.path == "/token" and req.method == "POST":
                return self._token(req)
            if req.path == "/end_session" and req.method in ("GET", "POST"):
                return self._end_session(req)
        except OAuthError as exc:
            if req.path == "/token":
                extra = {"WWW-Authenticate": 'Basic realm="conformance"'} if exc.status == 401 else {}
                return _json(exc.status, {"error": exc.error, "error_description": exc.description}, **extra)
            return _page(exc.status, f"{exc.error}: {exc.description}")
        return 404, {"Content-Type": "text/plain"}, b"not found"

    # -- sign-in --------------------------------------------------------------------------
    def register_client(
        self, client_id: str, client_secret: str | None = None, redirect_uris: tuple[str, ...] = ()
    ) -> RegisteredClient:
        client = RegisteredClient(client_id, client_secret, tuple(redirect_uris))
        self.clients[client_id] = client
        return client

    def open_session(self, sub: str, sid: str | None = None) -> str:
        """An OP session of ``sub`` (``sid`` chosen by the caller, or fresh): returns the value
        of :data:`SESSION_COOKIE` that signs a user agent in as that End-User."""
        value = secrets.token_urlsafe(24)
        self.sessions[value] = OPSession(sub, sid or f"op-sid-{secrets.token_hex(8)}", int(time.time()))
        return value

    def _session(self, req: Captured) -> tuple[OPSession, str | None]:
        """The End-User's OP session, and the cookie to set when a new one was opened."""
        value = _cookie(req, SESSION_COOKIE)
        if value is not None and value in self.sessions:
            return self.sessions[value], None
        value = self.open_session(self.test_user)
        return self.sessions[value], value

    def _redirect_ok(self, client: RegisteredClient, uri: str) -> bool:
        if client.redirect_uris:
            return uri in client.redirect_uris  # Core §3.1.2.1: simple string comparison
        parts = urlsplit(uri)
        return parts.scheme in ("http", "https") and not parts.fragment and is_loopback(uri)

    def _authorize(self, req: Captured) -> Response:
        """Core §3.1.2 (code), §3.2.2 (id_token), §3.3.2 (code id_token): the End-User is
        approved at once (no login page, no consent). Errors about the client or its
        redirect_uri are shown as a page (§3.1.2.6: never redirected to an unverified URI)."""
        p = _params(req)
        client = self.clients.get(p.get("client_id", ""))
        if client is None:
            raise OAuthError("invalid_request", f"unknown client_id {p.get('client_id')!r}")
        redirect_uri = p.get("redirect_uri", "")
        if not self._redirect_ok(client, redirect_uri):
            raise OAuthError("invalid_request", f"redirect_uri {redirect_uri!r} is not registered")
        response_type = " ".join(sorted(p.get("response_type", "").split()))
        front_id_token = "id_token" in response_type.split()
        mode = p.get("response_mode") or ("fragment" if front_id_token else "query")
        state = p.get("state")

        def error(code: str, description: str) -> Response:
            if mode not in ("query", "fragment", "form_post"):
                return _page(400, f"{code}: {description}")
            return self._answer(redirect_uri, mode, {"error": code, "error_description": description}, state)

        if response_type not in RESPONSE_TYPES:
            return error("unsupported_response_type", f"response_type {p.get('response_type')!r}")
        if mode not in ("query", "fragment", "form_post"):
            return error("invalid_request", f"response_mode {mode!r} is not supported")
        if mode == "query" and front_id_token:
            # OAuth 2.0 Multiple Response Type Encoding Practices §5: not query for tokens.
            return error("invalid_request", "response_mode query is not allowed with id_token")
        if "openid" not in p.get("scope", "").split():
            return error("invalid_scope", "scope must contain openid")
        nonce = p.get("nonce")
        if front_id_token and not nonce:
            return error("invalid_request", "nonce is REQUIRED when an ID token is returned (Core §3.2.2.1)")
        challenge = p.get("code_challenge")
        if challenge and p.get("code_challenge_method", "plain") != "S256":
            return error("invalid_request", "code_challenge_method must be S256")
        if "code" in response_type.split() and client.client_secret is None and not challenge:
            return error("invalid_request", "a public client must use PKCE (RFC 7636)")
        if "none" in p.get("prompt", "").split() and len(p.get("prompt", "").split()) > 1:
            return error("invalid_request", "prompt none with other values")
        session, new_cookie = self._session(req)
        out: dict[str, str] = {}
        if "code" in response_type.split():
            code = secrets.token_urlsafe(24)
            self.codes[code] = CodeGrant(
                client.client_id,
                redirect_uri,
                session,
                nonce,
                challenge,
                p.get("scope", ""),
                time.time() + 60,
            )
            out["code"] = code
        if front_id_token:
            out["id_token"] = self.id_token(client.client_id, session, nonce, c_hash=out.get("code"))
        headers = {}
        if new_cookie:
            headers["Set-Cookie"] = f"{SESSION_COOKIE}={new_cookie}; Path=/; HttpOnly; SameSite=Lax"
        return self._answer(redirect_uri, mode, out, state, headers)

    @staticmethod
    def _answer(
        redirect_uri: str,
        mode: str,
        params: dict[str, str],
        state: str | None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if state is not None:
            params = {**params, "state": state}
        headers = dict(headers or {})
        if mode == "form_post":
            # OAuth 2.0 Form Post Response Mode §2: an auto-submitting form to the redirect_uri.
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in params.items()
            )
            body = (
                "<!doctype html><title>Submit</title>"
                f'<body onload="document.forms[0].submit()"><form method="post" '
                f'action="{html.escape(redirect_uri)}">{inputs}'
                "<noscript><button type=submit>Continue</button></noscript></form>"
                "<script>document.forms[0].submit()</script></body>"
            )
            return 200, {**headers, "Content-Type": "text/html; charset=utf-8"}, body.encode()
        sep = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
        return 302, {**headers, "Location": redirect_uri + sep + urlencode(params)}, b""

    def _client_auth(self, req: Captured, form: dict[str, str]) -> RegisteredClient:
        """RFC 6749 §2.3.1: client_secret_basic (form-urlencoded id and secret) or _post;
        a public client names itself with client_id and no secret."""
        auth = req.header("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
                cid, _, secret = raw.partition(":")
                cid, secret = unquote_plus(cid), unquote_plus(secret)
            except Exception:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            method = "basic"
        else:
            cid, secret, method = form.get("client_id", ""), form.get("client_secret", ""), "post"
        client = self.clients.get(cid)
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if client.client_secret is None:
            if secret:
                raise OAuthError("invalid_client", "public client sent a secret", 401)
            return client
        if not secret or not secrets.compare_digest(secret, client.client_secret):
            raise OAuthError("invalid_client", f"client authentication failed ({method})", 401)
        return client

    def _token(self, req: Captured) -> Response:
        """Core §3.1.3 / RFC 6749 §4.1.3 with RFC 7636 §4.6 (PKCE S256)."""
        form = _params(req)
        client = self._client_auth(req, form)
        if form.get("grant_type") != "authorization_code":
            raise OAuthError("unsupported_grant_type", f"grant_type {form.get('grant_type')!r}")
        grant = self.codes.pop(form.get("code", ""), None)  # single use (RFC 6749 §4.1.2)
        if grant is None or grant.expires < time.time() or grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "unknown, used, expired or another client's code")
        if form.get("redirect_uri", grant.redirect_uri) != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = form.get("code_verifier")
        if grant.code_challenge is not None:
            if not verifier or not secrets.compare_digest(s256(verifier), grant.code_challenge):
                raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        elif verifier:
            raise OAuthError("invalid_grant", "code_verifier sent for a request without code_challenge")
        access_token = secrets.token_urlsafe(32)
        return _json(
            200,
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": grant.scope,
                "id_token": self.id_token(client.client_id, grant.session, grant.nonce, at_hash=access_token),
            },
        )

    def _end_session(self, req: Captured) -> Response:
        """RP-Initiated Logout 1.0, minimal: ends the OP session of the user agent's cookie and
        redirects to a post_logout_redirect_uri of a known client (with state), or shows a
        page. It sends no logout token: the rp checks send their own."""
        p = _params(req)
        self.sessions.pop(_cookie(req, SESSION_COOKIE) or "", None)
        headers = {"Set-Cookie": f"{SESSION_COOKIE}=; Path=/; Max-Age=0"}
        uri = p.get("post_logout_redirect_uri")
        client_id = p.get("client_id")
        if not client_id and p.get("id_token_hint"):
            try:
                hint = jws.JWS()
                hint.deserialize(p["id_token_hint"], key=self.key)
                aud = json.loads(hint.payload).get("aud")
                client_id = aud if isinstance(aud, str) else None
            except Exception:
                client_id = None
        client = self.clients.get(client_id or "")
        if uri and client is not None and self._redirect_ok(client, uri):
            sep = "&" if "?" in uri else "?"
            target = uri + (sep + urlencode({"state": p["state"]}) if "state" in p else "")
            return 302, {**headers, "Location": target}, b""
        status, page_headers, body = _page(200, "You are logged out.")
        return status, {**headers, **page_headers}, body

    def id_token(
        self,
        client_id: str,
        session: OPSession,
        nonce: str | None,
        *,
        c_hash: str | None = None,
        at_hash: str | None = None,
    ) -> str:
        """Core §2: an ID token for ``session`` with its ``sid`` (Back-Channel §2.1), signed
        RS256 with the key published at ``/jwks``."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": session.sub,
            "aud": client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": session.auth_time,
            "sid": session.sid,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if c_hash is not None:
            claims["c_hash"] = left_hash(c_hash)
        if at_hash is not None:
            claims["at_hash"] = left_hash(at_hash)
        self.issued.append((client_id, session.sub, session.sid))
        s = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
        s.add_signature(
            self.key, alg="RS256", protected=json.dumps({"alg": "RS256", "kid": self.key.get("kid")})
        )
        return str(s.serialize(compact=True))

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
