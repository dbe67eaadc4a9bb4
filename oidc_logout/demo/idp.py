"""Build the demo IdP Flask app (also used by the tests and the conformance self-run)."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Flask

from ..clients import load_clients, read_clients_file
from ..config import Settings
from ..flask import OIDCLogout
from ..flask.errors import register_app_error_handlers
from ..flask.fastpath import install_wsgi_fast_path
from ..provider import Provider
from .users import DemoUsers


def create_idp_app(
    settings: Settings,
    *,
    password: str = "wonderland",
    clients: list[dict[str, Any]] | None = None,
    secret_key: str | None = None,
    start_background: bool = True,
) -> Flask:
    app = Flask("oidc_logout.demo.idp")
    app.secret_key = secret_key or secrets.token_urlsafe(32)
    app.config["SESSION_COOKIE_NAME"] = "op_csrf"
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    provider = Provider(settings, DemoUsers(password))
    provider.setup()
    if clients:
        load_clients(provider, clients)
    OIDCLogout(app, provider=provider, start_background=start_background)
    # The demo app is nothing but the OP: it asks for our error rendering app-wide (JSON
    # 404s at unknown paths too). A host app leaves this out and keeps its own.
    register_app_error_handlers(app)
    # The bundled OP has no request hooks of its own: the common RFC 7009 revocation is
    # answered before Flask (an opt-in for host apps, flask/fastpath.py says what it skips).
    install_wsgi_fast_path(app)
    return app


__all__ = ["create_idp_app", "load_clients", "read_clients_file"]
