"""Build the demo IdP Flask app (also used by the tests and the conformance self-run)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

from ..config import Settings
from ..flask import OIDCLogout
from ..provider import Provider
from ..registration import create_client, validate_metadata
from ..tokens import token_hash
from ..storage.models import Client
from .users import DemoUsers


def create_idp_app(settings: Settings, *, password: str = "wonderland",
                   clients: list[dict[str, Any]] | None = None, secret_key: str | None = None,
                   start_background: bool = True) -> Flask:
    app = Flask("oidc_logout.demo.idp")
    app.secret_key = secret_key or secrets.token_urlsafe(32)
    app.config["SESSION_COOKIE_NAME"] = "op_csrf"
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    provider = Provider(settings, DemoUsers(password))
    provider.setup()
    if clients:
        load_clients(provider, clients)
    OIDCLogout(app, provider=provider, start_background=start_background)
    return app


def load_clients(provider: Provider, clients: list[dict[str, Any]]) -> None:
    """Register (or re-register) clients from RFC 7591 metadata with client_id/client_secret.
    The operator loads them, so they are trusted (first-party: no consent page)."""
    with provider.session_factory.begin() as db:
        for meta in clients:
            if not isinstance(meta, dict) or not meta.get("client_id"):
                raise ValueError("every client needs a client_id")
            existing = db.get(Client, meta["client_id"])
            if existing is not None:
                clean = validate_metadata(meta, dev_mode=provider.settings.dev_mode)
                for key, value in clean.items():
                    setattr(existing, key, value)
                if meta.get("client_secret"):
                    existing.client_secret_hash = token_hash(meta["client_secret"])
                existing.trusted = True  # loaded by the operator: first-party
                continue
            create_client(db, meta, dev_mode=provider.settings.dev_mode, trusted=True,
                          client_id=meta["client_id"], client_secret=meta.get("client_secret"))


def read_clients_file(path: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise ValueError("--clients must be a JSON array of client metadata objects")
    return data
