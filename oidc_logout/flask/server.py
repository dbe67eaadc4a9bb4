"""Turnkey mode's small Authlib server of the package's own, and the request's database session.

:class:`OPServer` is an Authlib Flask ``AuthorizationServer`` over the package's own tables:
its grants (authorization code with PKCE and ``OpenIDCode``, refresh token, client
credentials), its token generator and its client lookup, and the
:class:`~oidc_logout.context.ServerContext` our endpoints see as ``self.server``. It registers
none of the extension's endpoints itself: ``OIDCLogout.init_app`` installs them on it with
:func:`~oidc_logout.flask.install.install`, the same step that installs them on a host's own
server in extension mode (:func:`own_endpoints` here, ``host_endpoints`` there)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749.errors import UnsupportedResponseTypeError
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from flask import g
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..core.client import OAuthClient
from ..core.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    OpenIDCode,
    RefreshTokenGrant,
    S256CodeChallenge,
    save_token,
)
from ..limits import plausible_client_id
from ..provider import Provider
from ..rfc7009.endpoint import RevocationEndpoint
from ..rfc7662.endpoint import IntrospectionEndpoint
from ..rpinitiated.end_session import EndSessionEndpoint
from ..storage.models import Client, OPSession
from ..tokens import new_token
from .opsession import current_op_session

DEFAULT_DESCRIPTIONS = {
    "invalid_client": "client authentication failed",
    "invalid_grant": "the grant or token is invalid, expired, revoked or issued to another client",
    "unsupported_grant_type": "this grant_type is not supported",
    "invalid_request": "the request is missing a parameter or is malformed",
    "unauthorized_client": "the client is not allowed to use this grant type",
    "invalid_scope": "the requested scope is invalid or exceeds what was granted",
    "unsupported_token_type": "this token type cannot be revoked",
    "access_denied": "the request was denied",
}


_clients = Client.__table__
#: Built once, compiled once (SQLAlchemy's statement cache).
_CLIENT_BY_ID = select(_clients).where(_clients.c.client_id == bindparam("cid"))


#: Extension mode: the host's request session, per provider (its tables and ours, one transaction).
_HOST_SESSIONS: weakref.WeakKeyDictionary[Provider, Callable[[], Session]] = weakref.WeakKeyDictionary()


def use_host_session(provider: Provider, session: Callable[[], Session]) -> None:
    """Requests of ``provider`` use the host's session (Flask-SQLAlchemy's ``db.session``)
    instead of one of their own: what the extension writes commits with the host's rows."""
    _HOST_SESSIONS[provider] = session


def request_db(provider: Provider) -> Session:
    """The request's database session (one transaction per request; closed at teardown). In
    extension mode, the host's own request session."""
    host = _HOST_SESSIONS.get(provider)
    if host is not None:
        return host()
    db: Session | None = g.get("_oidc_logout_db")
    if db is None:
        db = provider.session_factory()
        g._oidc_logout_db = db
    return db


def own_endpoints() -> tuple[Any, ...]:
    """The extension's endpoints as turnkey mode registers them on :class:`OPServer`: RFC 7009
    revocation and RFC 7662 introspection over the package's own (hashed) tokens, and
    RP-Initiated Logout verifying ``id_token_hint`` with the package's own keys."""
    return (RevocationEndpoint(), IntrospectionEndpoint(), EndSessionEndpoint())


class OPServer(AuthorizationServer):  # type: ignore[misc]
    """The package's own small Authlib server (turnkey mode): grants, token generator and
    client lookup over the package's tables. ``OIDCLogout.init_app`` installs the extension's
    endpoints on it as on a host's server."""

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self.provider = provider
        self._query_client = self._load_client
        self._save_token = lambda token, request: save_token(self, token, request)
        settings = provider.settings
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: new_token(),
                refresh_token_generator=lambda **_: new_token(),
                expires_generator=lambda client, grant_type: settings.access_token_lifetime,
            ),
        )
        self.scopes_supported = None
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), OpenIDCode(self)])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)

    @property
    def db(self) -> Session:
        return request_db(self.provider)

    @property
    def settings(self) -> Settings:
        return self.provider.settings

    def current_session(self) -> OPSession | None:
        return current_op_session(self.db, self.provider.settings)

    def _load_client(self, client_id: Any) -> OAuthClient | None:
        # A client_id that cannot exist never reaches the database (PostgreSQL refuses NUL).
        if not plausible_client_id(client_id):
            return None
        # A Core row (attribute access like the entity, read-only) on the request's own
        # connection and transaction: no ORM entity to build for a lookup every token,
        # revocation and introspection request makes.
        row = self.db.connection().execute(_CLIENT_BY_ID, {"cid": client_id}).first()
        return OAuthClient(row) if row is not None else None  # type: ignore[arg-type]

    def get_authorization_grant(self, request: Any) -> Any:
        """Authlib's lookup, with an error description that never quotes the request: its
        ``OAuth2Error`` refuses (ValueError, a 500) a description outside RFC 6749 §4.1.2.1's
        character set, and the raw ``response_type`` may hold quotes, non-ASCII or NUL."""
        for grant_cls, _extensions in self._authorization_grants:
            if grant_cls.check_authorization_endpoint(request):
                return super().get_authorization_grant(request)
        # RFC 6749 §4.1.2.1: redirect the error only to a redirect URI validated for the client.
        redirect_uri = None
        client = self.query_client(request.payload.client_id)
        if client is not None:
            requested = request.payload.redirect_uri
            if requested:
                redirect_uri = requested if client.check_redirect_uri(requested) else None
            else:
                redirect_uri = client.get_default_redirect_uri()
        raise UnsupportedResponseTypeError(
            None, description="only response_type 'code' is supported", redirect_uri=redirect_uri
        )

    def handle_error_response(self, request: Any, error: Any) -> Any:
        # RFC 6749 §5.2: error_description is optional, but a clear error is this project's
        # rule; fill one where Authlib raised the bare code.
        if not getattr(error, "description", None):
            error.description = DEFAULT_DESCRIPTIONS.get(error.error, error.error.replace("_", " "))
        return super().handle_error_response(request, error)

    def load_config(self, config: Any) -> None:  # our generator and settings stand
        self._error_uris = None


__all__ = ["OPServer", "own_endpoints", "request_db", "use_host_session"]
