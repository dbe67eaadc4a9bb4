"""Extension mode on Flask: the host's own Authlib ``AuthorizationServer`` as the
:class:`~oidc_logout.context.ServerContext` of the extension's endpoints, and the hooks that
bring OP sessions and ``sid`` into the host's grants.

What the host adds (docs/integration.md walks through it):

* :class:`SessionIDMixin` in front of its ``OpenIDCode`` class: the authorization code is bound
  to the browser's OP session when the host issues it (Authlib's
  ``after_authorization_response`` grant hook), the client becomes a participant of that
  session, and the ID token carries ``sid`` (Back-Channel Logout §2.1, Front-Channel §3) and
  the session's ``amr`` / ``acr``;
* ``OIDCLogout(app, server=..., token_model=..., db=...)``, which wraps the server's
  ``save_token`` (every grant, refresh rotation included, goes through it) to bind each new
  host token row to the session its code or refresh token belongs to
  (:func:`observe_save_token`), and installs :func:`host_endpoints` (RP-initiated logout and
  RFC 7662 introspection) on the host's server with the same
  :func:`~oidc_logout.flask.install.install` step turnkey mode applies to the package's own
  server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from flask import current_app, has_app_context
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..core.bearer import host_access_token_terminated
from ..core.grants import record_participation, touch_session
from ..host import (
    CODE,
    Presented,
    bind_code,
    bind_token,
    find_presented,
    live_session,
    row_expired,
    row_pk,
    row_revoked,
    session_of_code,
    session_of_token,
)
from ..host_models import sync_host_client
from ..limits import plausible_token
from ..provider import Provider
from ..rfc7662.endpoint import INTROSPECT_SCOPE
from ..rpinitiated.end_session import EndSessionEndpoint
from ..storage.models import HostTokenSession, OPSession
from ..termination import ClientKill, Target
from ..tokens import token_hash
from .host_revocation import HostRevocationEndpoint, refuse_other_revocation
from .install import install_endpoints
from .on_host import OnHostServer
from .opsession import current_op_session
from .server import request_db
from .state import state

__all__ = [
    "HostClient",
    "HostContext",
    "HostEndSessionEndpoint",
    "HostIntrospectionEndpoint",
    "HostRevocationEndpoint",
    "SessionIDMixin",
    "host_endpoints",
    "install_on_host_server",
    "is_host_mode",
    "observe_save_token",
    "prepare_host_target",
    "shadow_host_client",
]

#: Where the sid of a token request travels from ``save_token`` to the ID token.
_SID_ATTRIBUTE = "oidc_logout_sid"


class HostClient:
    """A host client (Authlib ``ClientMixin``) as the extension's endpoints read one: every
    attribute is the host's; ``row`` is the client itself (its ``client_name`` and ``scope``
    come from the mixin's ``client_metadata``)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @property
    def row(self) -> Any:
        return self._client

    def get_client_id(self) -> str:
        return str(self._client.get_client_id())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class HostContext:
    """:class:`~oidc_logout.context.ServerContext` over the host's ``AuthorizationServer``:
    the request's database session is the host's (one transaction with the host's rows),
    clients are the host's, and everything else (request parsing, client authentication,
    response rendering) is the host server's own."""

    def __init__(
        self, host: Any, provider: Provider, id_token_jwks: Callable[[], dict[str, Any]] | None
    ) -> None:
        self.host = host
        self._provider = provider
        self._id_token_jwks = id_token_jwks

    @property
    def db(self) -> Session:
        return request_db(self._provider)

    @property
    def provider(self) -> Provider:
        return self._provider

    @property
    def settings(self) -> Settings:
        return self._provider.settings

    def query_client(self, client_id: str) -> HostClient | None:
        if not isinstance(client_id, str) or not 0 < len(client_id) <= 255 or not client_id.isprintable():
            return None
        client = self.host.query_client(client_id)
        return HostClient(client) if client is not None else None

    def current_session(self) -> OPSession | None:
        return current_op_session(self.db, self.settings)

    def id_token_jwks(self) -> dict[str, Any]:
        """The keys the host signs ID tokens with (an ``id_token_hint`` is verified with them)."""
        if self._id_token_jwks is None:
            return self._provider.keyring.public_jwks()
        return self._id_token_jwks()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)


class HostEndSessionEndpoint(OnHostServer, EndSessionEndpoint):
    """RP-Initiated Logout 1.0 on the host's server: ``id_token_hint`` is verified with the
    host's ID token keys; everything else is :class:`EndSessionEndpoint`."""

    def get_server_jwks(self) -> dict[str, Any]:
        return self.server.id_token_jwks()  # type: ignore[no-any-return]

    def get_algorithms(self) -> list[str]:
        algs = {k.get("alg") for k in self.server.id_token_jwks().get("keys", []) if k.get("alg")}
        return sorted(algs | set(self.server.provider.keyring.algs()))


class HostIntrospectionEndpoint(OnHostServer, _IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662 over the host's token model (``OAuth2TokenMixin``): ``active: false`` the
    moment a termination revoked the token (§2.2)."""

    # §2.1: "the endpoint MUST also require some form of authorization"; public clients can't.
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def __init__(self, token_model: Any) -> None:
        super().__init__()
        self.token_model = token_model

    def query_token(self, token_string: str, token_type_hint: str | None) -> Presented | None:
        if not plausible_token(token_string):
            return None  # as host revocation: never a lookup of what no token can be
        return find_presented(self.server.db, self.token_model, token_string, token_type_hint)

    def check_permission(self, token: Presented, client: Any, request: Any) -> bool:
        # §4: the server must not reveal tokens to resource servers not entitled to them.
        scopes = str(getattr(client, "scope", "") or "").split()
        return bool(token.row.client_id == client.get_client_id() or INTROSPECT_SCOPE in scopes)

    def create_introspection_payload(self, token: Presented | None) -> dict[str, Any]:
        # §2.2: inactive, unknown or not this client's: only "active": false.
        if token is None:
            return {"active": False}
        row = token.row
        if token.refresh:
            if row.refresh_token_revoked_at:
                return {"active": False}
        elif row_revoked(row) or row_expired(row):
            # RFC 7662 §2.2 "active": what the host's own resource protection decides, i.e.
            # Authlib's bearer validator calling the row's is_revoked() and is_expired() (the
            # mixin: either column set, a revoke_old_credential that retires only the refresh
            # token retires the row's access token there too; no expires_in never expires).
            return {"active": False}
        elif host_access_token_terminated(self.server.db, row) is not None:
            # The extension's bearer checks refuse it (a cut-off, an ended session): not active.
            return {"active": False}
        return self.introspect_token(token)

    def introspect_token(self, token: Presented) -> dict[str, Any]:
        row = token.row
        body: dict[str, Any] = {
            "active": True,
            "scope": row.scope,
            "client_id": row.client_id,
            "token_type": "refresh_token" if token.refresh else "Bearer",
            "iat": int(row.issued_at),
            "iss": self.server.settings.issuer,
            "aud": row.client_id,
        }
        if not token.refresh and row.expires_in:
            body["exp"] = int(row.issued_at + row.expires_in)
        user_id = getattr(row, "user_id", None)
        if user_id is not None:
            body["sub"] = str(user_id)
        sid = session_of_token(self.server.db, row_pk(row))
        if live_session(self.server.db, sid) is not None:
            body["sid"] = sid
        return body


# -- the grant hooks ---------------------------------------------------------------------------
class SessionIDMixin:
    """Put this in front of the host's ``OpenIDCode`` subclass::

        class OpenIDCode(SessionIDMixin, oidc_grants.OpenIDCode): ...

    It registers one more hook on the authorization code grant and adds ``sid`` (and the OP
    session's ``amr``/``acr``) to the ID token; nothing else of the host's class changes."""

    def __call__(self, grant: Any) -> None:
        super().__call__(grant)  # type: ignore[misc]
        grant.register_hook("after_authorization_response", _code_issued)

    def get_compatible_claims(self, request: Any) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_compatible_claims(request)  # type: ignore[misc]
        sid = getattr(request, _SID_ATTRIBUTE, None)
        if sid is None and request.payload.data.get("code"):
            sid = session_of_code(request_db(state().provider), request.payload.data["code"])
        row = live_session(request_db(state().provider), sid)
        if row is not None:
            # Back-Channel Logout §2.1 / Front-Channel §3: "sid (session ID) Claim used in ID
            # Tokens and as a parameter in the Logout Token".
            claims["sid"] = row.sid
            # Core 1.0 §2: how the End-User authenticated (the host's sign_in told us).
            if row.amr:
                claims["amr"] = list(row.amr)
            if row.acr:
                claims["acr"] = row.acr
        return claims


def _code_issued(grant: Any, response: Any) -> None:
    """``after_authorization_response``: a code went to the client. Bind it to the browser's
    OP session and record the client as a participant (its shadow row synced first)."""
    if getattr(response, "status_code", 0) != 302:
        return
    query = parse_qs(urlsplit(response.headers.get("Location", "")).query)
    code = (query.get("code") or [None])[0]
    client = grant.request.client
    if not code or client is None:
        return
    ext = state()
    db = request_db(ext.provider)
    row = current_op_session(db, ext.provider.settings)
    if row is None:
        return  # the host issued a code outside any OP session: no sid, nothing to notify
    client_id = str(client.get_client_id())
    # Read first, write on a difference: no row lock on an unchanged client's shadow row.
    sync_host_client(db.connection(), client_id, dict(client.client_metadata or {}))
    record_participation(db, row.sid, client_id)
    bind_code(db, code, row.sid, client_id)
    touch_session(db, row.sid)
    db.commit()


def host_endpoints(server: Any, token_model: Any) -> tuple[Any, ...]:
    """The extension's endpoints as extension mode registers them on the host's server:
    RFC 7009 revocation and RFC 7662 introspection over the host's token model, and
    RP-Initiated Logout verifying ``id_token_hint`` with the host's ID token keys. A
    revocation endpoint of the host's own is refused (host_revocation.py says why)."""
    refuse_other_revocation(server)
    return (
        HostRevocationEndpoint(token_model),
        HostEndSessionEndpoint(),
        HostIntrospectionEndpoint(token_model),
    )


def observe_save_token(server: Any, token_model: Any) -> None:
    """Wrap the host server's ``save_token``, once per server (several applications may share
    it): after the host stored a token row, bind it to the OP session of the code
    (authorization_code) or of the refresh token it replaces (refresh rotation keeps the
    binding while the session lives). The package's own server binds its tokens itself."""
    if getattr(server, "_oidc_logout_observed", False):
        return
    original: Callable[[dict[str, Any], Any], Any] = server._save_token

    def save_token(token: dict[str, Any], request: Any) -> Any:
        result = original(token, request)
        if has_app_context() and "oidc_logout" in current_app.extensions:
            _bind_issued_token(state().provider, token_model, token, request)
        return result

    server._save_token = save_token
    server._oidc_logout_observed = True


def install_on_host_server(server: Any, token_model: Any) -> None:
    """Register :func:`host_endpoints` on the host's server and observe its ``save_token``,
    once per server. ``OIDCLogout.init_app`` does the same through
    :func:`~oidc_logout.flask.install.install`; this is for a host wiring a server by hand."""
    install_endpoints(server, host_endpoints(server, token_model))
    observe_save_token(server, token_model)


def _bind_issued_token(provider: Provider, token_model: Any, token: dict[str, Any], request: Any) -> None:
    access = token.get("access_token")
    client = getattr(request, "client", None)
    if not access or client is None:
        return
    db = request_db(provider)
    sid: str | None = None
    grant_type = request.payload.grant_type
    if grant_type == "authorization_code":
        code = request.payload.data.get("code") or ""
        sid = session_of_code(db, code)
        # The code is single-use: its binding has served.
        db.execute(
            delete(HostTokenSession).where(
                HostTokenSession.kind == CODE, HostTokenSession.ref == token_hash(code)
            )
        )
    elif grant_type == "refresh_token" and getattr(request, "refresh_token", None) is not None:
        old = request.refresh_token
        sid = session_of_token(db, row_pk(old))
    if live_session(db, sid) is None:
        db.commit()
        return
    assert sid is not None
    row = db.scalar(select(token_model).where(token_model.access_token == access))
    if row is None:
        db.commit()
        return
    client_id = str(client.get_client_id())
    bind_token(db, row_pk(row), sid, client_id)
    record_participation(db, sid, client_id)
    setattr(request, _SID_ATTRIBUTE, sid)
    db.commit()


# -- the admin API and SSF in extension mode ---------------------------------------------------
def is_host_mode() -> bool:
    """Whether the current app runs the extension over a host's server."""
    return isinstance(state().server, HostContext)


def shadow_host_client(db: Session, client_id: str) -> bool:
    """Extension mode: create or refresh the extension's shadow row of the host client
    ``client_id`` from the host's metadata (a termination by client and an SSF stream point
    at it); False when the host has no such client. In the caller's transaction."""
    client = state().server.query_client(client_id)
    if client is None:
        return False
    sync_host_client(db.connection(), client.get_client_id(), dict(client.client_metadata or {}))
    return True


def prepare_host_target(db: Session, target: Target) -> None:
    """Extension mode, before an admin termination: a client named by ``client_id`` is the
    host's (its shadow row is synced, so a client whose tokens came only from
    ``client_credentials`` can be terminated too). A ``grant_id`` names a host token row
    (``host-token:<table>:<pk>``, :class:`~oidc_logout.host.HostTokenStore`) and needs nothing."""
    if isinstance(target, ClientKill):
        shadow_host_client(db, target.client_id)
