"""Application factory."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response

from .models import db, ensure_user
from .oauth2 import config_oauth, ensure_signing_key, load_clients
from .routes import bp

#: The accounts every start makes sure exist (with the password given to ``seed``).
USERS = {
    "alice": {"name": "Alice", "email": "alice@example.com"},
    "bob": {"name": "Bob", "email": "bob@example.com"},
}

REQUIRED = ("ISSUER", "SQLALCHEMY_DATABASE_URI", "SECRET_KEY")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the IdP. ``config`` must give ``ISSUER`` (e.g. ``https://id.example.com``),
    ``SQLALCHEMY_DATABASE_URI`` and ``SECRET_KEY``; optional: ``DEV_MODE`` (accept http and
    loopback redirect URIs at registration, open registration without a token) and
    ``REGISTRATION_TOKEN`` (the RFC 7591 initial access token)."""
    app = Flask(__name__)
    app.config.update(
        DEV_MODE=False,
        REGISTRATION_TOKEN=None,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    if config:
        app.config.update(config)
    missing = [key for key in REQUIRED if not app.config.get(key)]
    if missing:
        raise RuntimeError(f"create_app() needs these config keys: {', '.join(missing)}")
    app.config["ISSUER"] = str(app.config["ISSUER"]).rstrip("/")
    app.config.setdefault("SESSION_COOKIE_SECURE", app.config["ISSUER"].startswith("https://"))

    db.init_app(app)
    config_oauth(app)
    app.register_blueprint(bp)
    app.after_request(_security_headers)

    with app.app_context():
        db.create_all()
        ensure_signing_key()
    return app


def _security_headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        # The sign-in and consent pages must not be framed (clickjacking) or cached.
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def seed(app: Flask, *, password: str, clients: list[dict[str, Any]] | None = None) -> None:
    """Create the users that do not exist yet (``alice``, ``bob``) and create or update the
    given clients (RFC 7591 metadata with ``client_id`` and ``client_secret``)."""
    with app.app_context():
        for username, profile in USERS.items():
            ensure_user(username, password, **profile)
        if clients:
            load_clients(clients)


def read_clients_file(path: str | Path) -> list[dict[str, Any]]:
    """A JSON array of client metadata objects."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(f"{path}: expected a JSON array of client metadata objects")
    return data
