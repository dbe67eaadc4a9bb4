"""``OIDCLogout(app=None)`` + ``init_app()``: the OP side as a Flask extension.

Settings are read once from ``OIDC_LOGOUT_*`` config keys (see :class:`oidc_logout.config.Settings`);
state lives in ``app.extensions["oidc_logout"]``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from flask import Flask, g

from .._redact import install_library_log_redaction
from ..config import Settings, settings_from_mapping
from ..protocols import UserDirectory
from ..provider import Provider
from .errors import register_error_handlers
from .server import OPServer
from .signin import sign_in
from .state import ExtensionState, state
from .views import blueprint


class OIDCLogout:
    def __init__(
        self,
        app: Flask | None = None,
        *,
        users: UserDirectory | None = None,
        settings: Settings | None = None,
        provider: Provider | None = None,
        start_background: bool = True,
    ) -> None:
        self._users = users
        self._settings = settings
        self._provider = provider
        self._start_background = start_background
        #: The OP core of the app this extension was initialised on.
        self.provider: Provider | None = provider
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "oidc_logout" in app.extensions:
            raise RuntimeError("OIDCLogout is already registered on this app; call init_app once.")
        provider = self._provider
        if provider is None:
            if self._users is None:
                raise RuntimeError("OIDCLogout needs a UserDirectory: OIDCLogout(app, users=...)")
            settings = settings_from_mapping(dict(app.config), base=self._settings)
            provider = Provider(settings, self._users)
            provider.setup()
        settings = provider.settings
        install_library_log_redaction()
        # Flask's default config holds MAX_CONTENT_LENGTH = None, so setdefault would not apply.
        if app.config.get("MAX_CONTENT_LENGTH") is None:
            app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
        if not app.secret_key:
            raise RuntimeError(
                "OIDCLogout needs app.secret_key (CSRF tokens live in Flask's signed session)."
            )
        server = OPServer(provider)
        app.extensions["oidc_logout"] = ExtensionState(provider, server)
        self.provider = provider

        app.register_blueprint(blueprint)
        register_error_handlers(app)
        app.teardown_appcontext(_close_db)
        if self._start_background:
            provider.start_background()

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


def _close_db(_exc: Any) -> None:
    db = g.pop("_oidc_logout_db", None)
    if db is not None:
        db.close()


__all__ = ["OIDCLogout"]
