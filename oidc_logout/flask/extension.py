"""``OIDCLogout(app=None)`` + ``init_app()``: the OP side as a Flask extension.

One extension, applied to an Authlib ``AuthorizationServer``: ``init_app`` picks the server,
the :class:`~oidc_logout.context.ServerContext` its endpoints see and the token store its
terminations revoke (an :class:`~oidc_logout.flask.install.Installation`), then runs the same
install steps (:func:`~oidc_logout.flask.install.install`) whichever it picked:

* **extension mode** -- ``OIDCLogout(app, server=<the host's Authlib AuthorizationServer>,
  token_model=<its OAuth2TokenMixin model>, db=<its Flask-SQLAlchemy db>)``: the host keeps its
  server, grants, models, login, consent and routes; the extension adds OP sessions and ``sid``
  (through :class:`~oidc_logout.flask.host.SessionIDMixin` on the host's ``OpenIDCode``),
  RP-initiated logout and introspection registered on the host's server, back-/front-channel
  delivery, and terminations that revoke the host's tokens
  (:class:`~oidc_logout.host.HostTokenStore`) in the same transaction as its own rows (its
  tables live in the host's database, written through the host's session);
* **turnkey mode** -- no ``server``: the package's own small Authlib server
  (:class:`~oidc_logout.flask.server.OPServer`: grants and token generator over the package's
  tables) takes the host server's place, and the extension is installed on it the same way,
  with revocation too and the package's own token store
  (:class:`~oidc_logout.storage.own_tokens.OwnTokenStore`); the bundled login, consent,
  token, userinfo, registration, revocation and discovery routes serve it.

Settings are read once from ``OIDC_LOGOUT_*`` config keys (see :class:`oidc_logout.config.Settings`);
state lives in ``app.extensions["oidc_logout"]``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, current_app, g, has_app_context, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .._redact import install_library_log_redaction
from ..backchannel import discovery as backchannel_discovery
from ..config import Settings, check_production, settings_from_mapping
from ..core.bearer import BearerProtector, HostTokenValidator
from ..core.consent import requested_scopes
from ..frontchannel import discovery as frontchannel_discovery
from ..host import HostTokenStore
from ..host_models import install_host_models, sync_host_client
from ..protocols import UserDirectory
from ..provider import Provider
from ..storage.consent import approved_scopes, remember_consent
from ..storage.own_tokens import OwnTokenStore
from .errors import register_routing_error_handlers
from .host import HostContext, host_endpoints, observe_save_token
from .install import Installation, install
from .routes import ROUTES, Route, endpoint_metadata, normalize_prefix, served_routes
from .server import OPServer, own_endpoints, request_db, use_host_session
from .signin import sign_in
from .state import ExtensionState, state
from .views import BLUEPRINT_NAME, make_blueprint

#: Members of ``OIDCLogout.metadata()``: what a host with its own discovery document merges.
_MERGED_ENDPOINTS = (
    "end_session_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
    "global_token_revocation_endpoint",
)
#: The routes the extension serves in extension mode: authorization, token, userinfo,
#: registration, revocation, discovery and login stay the host's; health and metrics are ours.
HOST_MODE_ROUTES = frozenset(
    {"introspect", "end_session", "frontchannel_report", "metrics_endpoint", "healthz", "readyz"}
) | frozenset(
    {
        # The admin API, the operator console and SSF stream management, authenticated with
        # the host's own access tokens (core.bearer.HostTokenValidator), and the keys that sign
        # their SETs (jwks: SSF §7.1 jwks_uri; the host's JWKS may publish them too), and
        # Global Token Revocation (its opaque and iss_sub subjects are the host's user ids;
        # email needs a directory with subject_for_email, OIDCLogout(users=...)).
        "jwks",
        "gtr",
        "admin_terminate",
        "admin_termination",
        "admin_rotate_secret",  # answers invalid_request: client secrets are the host's
        "admin_terminations",
        "admin_deliveries",
        "admin_requeue",
        "admin_openapi_document",
        "console",
        "console_login",
        "console_logout",
        "console_termination",
        "console_deliveries",
        "console_requeue",
        "ssf_configuration",
        "ssf_stream",
        "ssf_status",
        "ssf_subject_add",
        "ssf_subject_remove",
        "ssf_verify",
        "ssf_poll",
    }
)


class OIDCLogout:
    def __init__(
        self,
        app: Flask | None = None,
        *,
        users: UserDirectory | None = None,
        settings: Settings | None = None,
        provider: Provider | None = None,
        start_background: bool = True,
        url_prefix: str | None = None,
        serve_discovery: bool | None = None,
        server: Any = None,
        token_model: Any = None,
        client_model: Any = None,
        db: Any = None,
        id_token_jwks: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """``url_prefix`` / ``serve_discovery`` override the ``OIDC_LOGOUT_URL_PREFIX`` /
        ``OIDC_LOGOUT_SERVE_DISCOVERY`` settings (see :class:`~oidc_logout.config.Settings`).

        Extension mode (all of these together):

        :param server: the host's ``authlib.integrations.flask_oauth2.AuthorizationServer``;
            RP-initiated logout (``end_session``) and RFC 7662 introspection are registered on
            it, and its ``save_token`` is observed to bind tokens to OP sessions.
        :param token_model: the host's token model on Authlib's ``OAuth2TokenMixin`` with a
            ``user_id`` column: terminations revoke its rows.
        :param client_model: optional, the host's client model on ``OAuth2ClientMixin``: the
            extension's shadow client rows follow the host's writes to it (logout URIs,
            deletion) and are refreshed from it before a termination writes its outbox
            (:mod:`oidc_logout.host_models`). Without it the logout metadata is copied only
            when a client gets a code.

        ``OIDC_LOGOUT_HOST_TOKEN_MODEL`` / ``OIDC_LOGOUT_HOST_CLIENT_MODEL`` (the CLI's and the
        workers' way of naming them), when set, must name the same classes.
        :param db: the host's Flask-SQLAlchemy ``SQLAlchemy`` object, or a callable returning
            the host's request ``Session``: the extension's tables live in that database and
            are written through that session (one transaction with the host's rows).
        :param id_token_jwks: returns the host's public JWKS (``{"keys": [...]}``): an
            ``id_token_hint`` is an ID token the host signed.

        ``users`` is optional in extension mode (the host signs users in and answers userinfo).
        """
        if server is not None and (token_model is None or db is None):
            raise TypeError("extension mode needs server=, token_model= and db= together")
        self._host_server = server
        self._token_model = token_model
        self._client_model = client_model
        self._db = db
        self._id_token_jwks = id_token_jwks
        self._users = users
        self._settings = settings
        self._provider = provider
        self._start_background = start_background
        self._url_prefix = url_prefix
        self._serve_discovery = serve_discovery
        #: The OP core of the app this extension was initialised on.
        self.provider: Provider | None = provider
        #: Where the routes are mounted on that app (``""``: at the root).
        self.url_prefix = ""
        self._routes: tuple[Route, ...] = ()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Apply the extension to ``app``: build (or take) the :class:`Provider`, pick the
        Authlib server it is installed on (the host's ``server=``, else a new
        :class:`~oidc_logout.flask.server.OPServer`), install the endpoints and token store on
        it (:func:`~oidc_logout.flask.install.install`, one sequence for both), then mount the
        routes of the mode and start the background threads."""
        if "oidc_logout" in app.extensions:
            raise RuntimeError("OIDCLogout is already registered on this app; call init_app once.")
        host = self._host_server is not None
        provider = self._provider
        host_session: Callable[[], Session] | None = None
        if host:
            engine, host_session = _host_database(app, self._db)
        if provider is None:
            if self._users is None and not host:
                raise RuntimeError("OIDCLogout needs a UserDirectory: OIDCLogout(app, users=...)")
            settings = settings_from_mapping(dict(app.config), base=self._settings)
            if host:
                # The extension's tables live in the host's database (one transaction).
                settings = settings.replace(database_url=engine.url.render_as_string(hide_password=False))
                provider = Provider(settings, self._users, engine=engine)
            else:
                provider = Provider(settings, self._users)
            provider.setup()
        settings = provider.settings
        # As `oidc-logout serve` does: outside development mode, refuse to start with the
        # development issuer (RPs reject logout tokens whose iss is not their OP's issuer,
        # Back-Channel Logout 1.0 §2.6) or the development database file.
        check_production(settings)
        prefix = normalize_prefix(self._url_prefix if self._url_prefix is not None else settings.url_prefix)
        serve_discovery = (
            self._serve_discovery if self._serve_discovery is not None else settings.serve_discovery
        )
        routes = served_routes(serve_discovery=serve_discovery)
        if host:
            routes = tuple(r for r in routes if r.name in HOST_MODE_ROUTES)
        check_no_shadowing(app, prefix, routes)
        install_library_log_redaction()
        if not app.secret_key:
            raise RuntimeError(
                "OIDCLogout needs app.secret_key (CSRF tokens live in Flask's signed session)."
            )
        # What the extension is applied to: the host's server or the package's own.
        target: Installation
        if host:
            assert host_session is not None
            use_host_session(provider, host_session)
            target = Installation(
                server=self._host_server,
                context=HostContext(self._host_server, provider, self._id_token_jwks),
                token_store=HostTokenStore(
                    self._token_model, user_id_attribute=settings.host_token_user_attribute or "user_id"
                ),
                endpoints=host_endpoints(self._host_server, self._token_model),
            )
            # The host's grants store tokens through its save_token: bind them to sessions.
            observe_save_token(self._host_server, self._token_model)
            # The settings naming the host's models (for the CLI and workers) must agree with
            # the arguments; the client model's writes keep the shadow rows in step.
            install_host_models(
                provider.engine, settings, token_model=self._token_model, client_model=self._client_model
            )
        else:
            own = OPServer(provider)
            target = Installation(
                server=own, context=own, token_store=OwnTokenStore(), endpoints=own_endpoints()
            )
        # The same install steps on either server.
        install(provider, target)
        app.extensions["oidc_logout"] = ExtensionState(
            provider,
            target.context,
            url_prefix=prefix,
            route_names=frozenset(r.name for r in routes),
            bearer=_bearer_protector(provider, self._token_model if host else None),
        )
        self.provider = provider
        self.url_prefix = prefix
        self._routes = routes

        app.register_blueprint(make_blueprint(routes), url_prefix=prefix or None)
        register_routing_error_handlers(app, _ours_matcher(prefix, routes))
        app.teardown_appcontext(_close_db)
        if self._start_background:
            provider.start_background()

    def metadata(self) -> dict[str, Any]:
        """The logout, revocation, introspection and end-session members of our discovery
        document (Back-/Front-Channel Logout §2.1/§3, RFC 7009 / RFC 7662 via RFC 8414 §2,
        RP-Initiated Logout §2.1), with absolute URLs under the issuer and ``url_prefix``:
        for a host that serves its own discovery document (``serve_discovery=False``) to
        merge into it. Logout tokens are signed with this extension's keys: the host's
        ``jwks_uri`` must publish them (ours is ``metadata()``'s sibling ``<prefix>/jwks``)."""
        provider, prefix, routes = self._current()
        endpoints = endpoint_metadata(provider.settings.issuer, prefix, routes)
        auth_methods = ["client_secret_basic", "client_secret_post", "none"]
        return {
            **{k: v for k, v in endpoints.items() if k in _MERGED_ENDPOINTS},
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            **backchannel_discovery.metadata(),
            **frontchannel_discovery.metadata(),
        }

    def ssf_configuration(self) -> dict[str, Any]:
        """The Shared Signals transmitter metadata (SSF 1.0 §7.1) served under the prefix at
        ``<prefix>/.well-known/ssf-configuration``. SSF §7.2 places it at the issuer's own
        ``/.well-known/ssf-configuration``; a host whose receivers look there serves this
        from that route of its app (the extension adds no route outside its prefix). Call it
        while handling a request (its URLs are absolute, built from the request's host)."""
        from .ssf_views import transmitter_configuration

        return transmitter_configuration()

    def jwks(self) -> dict[str, Any]:
        """The public keys that sign logout tokens (Back-Channel Logout §2.4), as a JWK Set: a
        host that serves its own ``jwks_uri`` adds these ``keys`` to it (RPs verify logout
        tokens with the keys the OP's discovery document names)."""
        return self._current()[0].keyring.public_jwks()

    def _current(self) -> tuple[Provider, str, tuple[Route, ...]]:
        """The current application's provider, prefix and routes (one ``OIDCLogout`` may be
        initialised on several applications), else those of the last ``init_app``."""
        if has_app_context() and "oidc_logout" in current_app.extensions:
            ext = state()
            return ext.provider, ext.url_prefix, tuple(r for r in ROUTES if r.name in ext.route_names)
        if self.provider is None:
            raise RuntimeError("OIDCLogout needs init_app() first")
        return self.provider, self.url_prefix, self._routes

    @staticmethod
    def has_consent(subject: str, client_id: str, scope: str) -> bool:
        """Whether ``subject`` already approved every scope value of ``scope`` for
        ``client_id`` (remembered with :meth:`remember_consent`). Core 1.0 §3.1.2.4 lets
        the OP establish consent "through other means" such as prior consent: a host whose
        consent page is its own answers ``prompt=none`` with it instead of
        ``consent_required``."""
        approved = approved_scopes(request_db(state().provider), subject, client_id)
        return approved is not None and requested_scopes(scope) <= approved

    @staticmethod
    def remember_consent(subject: str, client_id: str, scope: str) -> None:
        """Remember that ``subject`` approved ``scope`` for ``client_id`` (the host's consent
        page calls it on approval; commits the request transaction)."""
        ext = state()
        db = request_db(ext.provider)
        client = ext.server.query_client(client_id)
        if client is None:
            raise ValueError("no client with that client_id")
        if isinstance(ext.server, HostContext):
            sync_host_client(db.connection(), client_id, dict(client.client_metadata or {}))
        remember_consent(db, subject, client_id, requested_scopes(scope))
        db.commit()

    @staticmethod
    def current_session_subject() -> str | None:
        """The subject of the browser's live OP session, or None (none, ended, expired): a host
        in extension mode treats a user whose OP session ended (single logout) as signed out."""
        ext = state()
        row = ext.server.current_session()
        return row.subject if row is not None else None

    @staticmethod
    def sign_in(
        response: Any,
        subject: str,
        *,
        auth_time: dt.datetime | None = None,
        amr: Sequence[str] | None = None,
        acr: str | None = None,
    ) -> str:
        """Start (or renew) the OP session of ``subject`` from the host's own login view, after
        the host authenticated the End-User its own way (MFA included), and set the session
        cookie on ``response``; returns the sid. ``auth_time``, ``amr`` (RFC 8176 values) and
        ``acr`` reach the ID tokens (Core 1.0 §2). Commits the request transaction."""
        return sign_in(response, state().provider, subject, auth_time=auth_time, amr=amr, acr=acr)


def _rule_shape(rule: str) -> str:
    """A rule with its variables blanked: ``/a/<x>`` and ``/a/<int:y>`` overlap."""
    return re.sub(r"<[^>]*>", "<>", rule)


def check_no_shadowing(app: Flask, prefix: str, routes: Sequence[Route]) -> None:
    """Raise ``RuntimeError`` naming both endpoints for every route of ours whose URL (after
    ``prefix``) and methods overlap a rule the host registered before us: one of the two
    would silently never be reached."""
    host_rules = [r for r in app.url_map.iter_rules() if not r.endpoint.startswith(BLUEPRINT_NAME + ".")]
    collisions = []
    for route in routes:
        shape = _rule_shape(prefix + route.path)
        for rule in host_rules:
            overlap = set(route.methods) & set(rule.methods or ())
            if _rule_shape(rule.rule) == shape and overlap:
                collisions.append(
                    f"{', '.join(sorted(overlap))} {prefix + route.path}: the host's endpoint "
                    f"{rule.endpoint!r} and {BLUEPRINT_NAME}.{route.name}"
                )
    if collisions:
        raise RuntimeError(
            "OIDCLogout would shadow routes the app already serves ("
            + "; ".join(collisions)
            + "). Mount the extension elsewhere (url_prefix=...), let the host keep its discovery "
            "(serve_discovery=False and merge OIDCLogout.metadata()), or move the host's route."
        )


def _ours_matcher(prefix: str, routes: Sequence[Route]) -> Callable[[], bool]:
    """Whether the current request is the extension's, for errors raised before any view
    ran: its endpoint is ours, or its path is under our prefix, or (no prefix) it is the
    path of one of our routes (a 405). Everything else is the host's."""
    shapes = [
        re.compile(
            re.sub(r"<[^>]*>", "[^/]+", re.escape(prefix + r.path).replace(r"\<", "<").replace(r"\>", ">"))
        )
        for r in routes
    ]

    def is_ours() -> bool:
        if request.blueprint == BLUEPRINT_NAME:
            return True
        path = request.path
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return True
        return any(shape.fullmatch(path) for shape in shapes)

    return is_ours


def _host_database(app: Flask, db: Any) -> tuple[Engine, Callable[[], Session]]:
    """The host's engine and request session: a Flask-SQLAlchemy object (``db.engine``,
    ``db.session``) or a callable returning the host's ``Session``."""
    if callable(db) and not hasattr(db, "session"):
        factory: Callable[[], Session] = db
    else:
        scoped = db.session

        def factory() -> Session:
            return scoped()  # type: ignore[no-any-return]

    with app.app_context():
        bind = factory().get_bind()
        engine = getattr(bind, "engine", bind)
    if not isinstance(engine, Engine):
        raise TypeError("db= must give a Session bound to an Engine")
    return engine, factory


def _bearer_protector(provider: Provider, host_token_model: Any) -> BearerProtector:
    """RFC 6750 checks of the admin API, console and SSF routes: over the package's own hashed
    tokens (turnkey), or over the host's token model (extension mode: the host's token
    endpoint issues the admin and SSF tokens)."""

    def db() -> Session:
        return request_db(provider)

    if host_token_model is None:
        return BearerProtector(db)
    return BearerProtector(db, validator=HostTokenValidator(db, host_token_model))


def _close_db(_exc: Any) -> None:
    db = g.pop("_oidc_logout_db", None)
    if db is not None:
        db.close()


__all__ = ["HOST_MODE_ROUTES", "OIDCLogout", "check_no_shadowing"]
