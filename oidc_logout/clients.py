"""Operator-provisioned clients: register or update clients from RFC 7591 metadata that
carries its own ``client_id`` and ``client_secret`` (a deployment file, a secrets manager, a
migration from another OP). The same validation as dynamic registration applies; the secret is
stored only as a hash."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from .errors import InvalidClientMetadata
from .provider import Provider
from .registration import create_client, validate_metadata
from .storage.models import Client
from .tokens import token_hash

__all__ = ["load_clients", "read_clients_file", "upsert_client"]


def upsert_client(db: Session, metadata: dict[str, Any], *, dev_mode: bool, trusted: bool = True) -> Client:
    """Create the client ``metadata["client_id"]`` names, or bring an existing one up to date
    (in the caller's transaction; never commits). A given ``client_secret`` replaces the
    stored one; without one, an existing client keeps its secret. Clients the operator
    provisions are first-party (``trusted``: no consent page unless ``prompt=consent``);
    self-registered ones never are."""
    if (
        not isinstance(metadata, dict)
        or not isinstance(metadata.get("client_id"), str)
        or not metadata["client_id"]
    ):
        raise InvalidClientMetadata("every client needs a client_id")
    existing = db.get(Client, metadata["client_id"])
    if existing is None:
        client, _ = create_client(
            db,
            metadata,
            dev_mode=dev_mode,
            client_id=metadata["client_id"],
            client_secret=metadata.get("client_secret"),
            trusted=trusted,
        )
        return client
    for key, value in validate_metadata(metadata, dev_mode=dev_mode).items():
        setattr(existing, key, value)
    if metadata.get("client_secret"):
        existing.client_secret_hash = token_hash(metadata["client_secret"])
    existing.trusted = trusted
    return existing


def load_clients(provider: Provider, clients: Iterable[dict[str, Any]]) -> list[str]:
    """Upsert every client in one transaction (all or none); returns their client_ids."""
    with provider.session_factory.begin() as db:
        return [upsert_client(db, meta, dev_mode=provider.settings.dev_mode).client_id for meta in clients]


def read_clients_file(path: str | Path) -> list[dict[str, Any]]:
    """A JSON array of client metadata objects (the format ``--clients`` takes)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
        raise ValueError("a clients file must be a JSON array of client metadata objects")
    return data
