"""Signing keys managed with jwcrypto and kept in the database, so that every OP instance and
every delivery worker signs with the same keys and publishes the same JWKS."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

from jwcrypto import jwk
from sqlalchemy import select
from sqlalchemy.orm import Session

from .storage.base import utcnow
from .storage.models import SigningKey

#: Algorithms this OP signs ID tokens and logout tokens with, and the key type each needs.
SUPPORTED_ALGS: dict[str, tuple[str, dict[str, object]]] = {
    "RS256": ("RSA", {"size": 2048}),
    "PS256": ("RSA", {"size": 2048}),
    "ES256": ("EC", {"crv": "P-256"}),
}


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    key: jwk.JWK


def generate_key(alg: str) -> jwk.JWK:
    kty, params = SUPPORTED_ALGS[alg]
    key = jwk.JWK.generate(kty=kty, use="sig", alg=alg, **params)
    key_dict = key.export(private_key=True, as_dict=True)
    key_dict["kid"] = key.thumbprint()
    return jwk.JWK(**key_dict)


def ensure_keys(db: Session, algs: tuple[str, ...] = ("RS256", "ES256")) -> None:
    """Create one active key per algorithm that has none (the caller commits)."""
    existing = {k.alg for k in db.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None)))}
    for alg in algs:
        if alg not in existing:
            key = generate_key(alg)
            db.add(SigningKey(kid=key["kid"], alg=alg, private_jwk=_private_json(key)))


def rotate_key(db: Session, alg: str) -> str:
    """Retire the active key of ``alg`` and create a new one; returns the new kid."""
    for k in db.scalars(select(SigningKey).where(SigningKey.alg == alg,
                                                  SigningKey.retired_at.is_(None))):
        k.retired_at = utcnow()
    key = generate_key(alg)
    db.add(SigningKey(kid=key["kid"], alg=alg, private_jwk=_private_json(key)))
    return str(key["kid"])


def _private_json(key: jwk.JWK) -> str:
    return json.dumps(key.export(private_key=True, as_dict=True))


class KeyRing:
    """A cached view of the signing keys. Reloads at most every ``ttl`` seconds so that a key
    rotated by another instance is picked up without a database read per signature."""

    def __init__(self, session_factory, ttl: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        self._session_factory = session_factory
        self._ttl = ttl
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._active: dict[str, LoadedKey] = {}
        self._all: list[LoadedKey] = []

    def _load(self) -> None:
        with self._session_factory() as db:
            rows = db.scalars(select(SigningKey).order_by(SigningKey.created_at)).all()
            keys = [(r, jwk.JWK.from_json(r.private_jwk)) for r in rows]
        active: dict[str, LoadedKey] = {}
        all_keys: list[LoadedKey] = []
        for row, key in keys:
            loaded = LoadedKey(row.kid, row.alg, key)
            all_keys.append(loaded)
            if row.retired_at is None:
                active[row.alg] = loaded
        self._active, self._all = active, all_keys
        self._loaded_at = time.monotonic()

    def refresh(self) -> None:
        with self._lock:
            self._load()

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at > self._ttl or not self._active:
            with self._lock:
                if time.monotonic() - self._loaded_at > self._ttl or not self._active:
                    self._load()

    def signing_key(self, alg: str) -> LoadedKey:
        """The active key for ``alg``; raises KeyError if the OP has none for it."""
        self._fresh()
        return self._active[alg]

    def public_jwks(self) -> dict[str, list[dict[str, object]]]:
        """The JWKS document: every key, active and retired, public parts only."""
        self._fresh()
        out = []
        for k in self._all:
            pub = json.loads(k.key.export_public())
            pub.update({"kid": k.kid, "alg": k.alg, "use": "sig"})
            out.append(pub)
        return {"keys": out}

    def algs(self) -> list[str]:
        self._fresh()
        return sorted(self._active)
