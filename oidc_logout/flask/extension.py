"""``OIDCLogout(app=None)`` + ``init_app()``: the OP side as a Flask extension.

Settings are read once from ``OIDC_LOGOUT_*`` config keys (see :class:`oidc_logout.config.Settings`);
state lives in ``app.extensions["oidc_logout"]``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g

from .._redact import install_library_log_redaction
from ..config import Settings, settings_from_mapping
from ..protocols import UserDirectory
from ..provider import Provider
from .opsession import set_cookie, start_op_session
from .errors import register_error_handlers
from .server import OPServer, request_db
from .state import ExtensionState, state
from .views import blueprint


class OIDCLogout:
    def __init__(self, app: Flask | None = None, *, users: UserDirectory | None = None,
                 settings: Settings | None = None, provider: Provider | None = None,
                 start_background: bool = True) -> None:
        self._users = users
        self._settings = settings
        self._provider = provider
        self._start_background = start_background
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
            raise RuntimeError("OIDCLogout needs app.secret_key (CSRF tokens live in Flask's signed session).")
        server = OPServer(provider)
        app.extensions["oidc_logout"] = ExtensionState(provider, server)

        app.register_blueprint(blueprint)
        register_error_handlers(app)
        app.teardown_appcontext(_close_db)
        if self._start_background:
            provider.start_background()


    @staticmethod
    def sign_in(response: Any, subject: str) -> str:
        """Start an OP session for ``subject`` from the host's own login view and set its
        cookie on ``response``; returns the new sid. Commit happens here."""
        provider = state().provider
        db = request_db(provider)
        row, cookie = start_op_session(db, subject)
        db.commit()
        set_cookie(response, provider.settings, cookie)
        return row.sid


def _close_db(_exc: Any) -> None:
    db = g.pop("_oidc_logout_db", None)
    if db is not None:
        db.close()


__all__ = ["OIDCLogout"]
