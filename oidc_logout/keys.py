"""Signing keys managed with jwcrypto and kept in the database, so that every OP instance and
every delivery worker signs with the same keys and publishes the same JWKS."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk
from sqlalchemy import and_, or_, select
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
    #: When the key starts signing (None: since creation) and stops (None: not retired).
    activates_at: dt.datetime | None = None
    retired_at: dt.datetime | None = None
    created_at: dt.datetime | None = None

    def signs_at(self, now: dt.datetime) -> bool:
        """True while this key is the one to sign with (published keys that are not yet
        active, and retired keys, only verify)."""
        return (self.activates_at is None or self.activates_at <= now) and (
            self.retired_at is None or self.retired_at > now
        )

    @property
    def since(self) -> dt.datetime:
        return self.activates_at or self.created_at or dt.datetime.min.replace(tzinfo=dt.UTC)


def generate_key(alg: str) -> jwk.JWK:
    kty, params = SUPPORTED_ALGS[alg]
    key = jwk.JWK.generate(kty=kty, use="sig", alg=alg, **params)
    key_dict = key.export(private_key=True, as_dict=True)
    key_dict["kid"] = key.thumbprint()
    return jwk.JWK(**key_dict)


def _not_retired(now: dt.datetime) -> Any:
    return or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > now)


def _signing_now(now: dt.datetime) -> Any:
    return and_(_not_retired(now), or_(SigningKey.activates_at.is_(None), SigningKey.activates_at <= now))


def ensure_keys(db: Session, algs: tuple[str, ...] = ("RS256", "ES256")) -> None:
    """Create one key per algorithm that has none still in service (the caller commits)."""
    existing = {k.alg for k in db.scalars(select(SigningKey).where(_not_retired(utcnow())))}
    for alg in algs:
        if alg not in existing:
            key = generate_key(alg)
            db.add(SigningKey(kid=key["kid"], alg=alg, private_jwk=_private_json(key)))


def signing_algs(db: Session) -> set[str]:
    """The algorithms the OP holds a signing key for right now: exactly what discovery
    advertises as ``id_token_signing_alg_values_supported`` (:meth:`KeyRing.algs`)."""
    return set(db.scalars(select(SigningKey.alg).where(_signing_now(utcnow())).distinct()))


def rotate_key(
    db: Session, alg: str, *, publish_for: float = 0.0, now: dt.datetime | None = None
) -> tuple[str, dt.datetime]:
    """Start a rotation of the ``alg`` key; returns the new kid and when it starts signing.

    Two steps (RFC 7517 §5 key sets; the rollover practice of publishing the next key
    before using it): the new key is published in the JWKS at once but signs only
    ``publish_for`` seconds later, and the keys of ``alg`` still in service retire at that
    same instant (they stay published, so tokens they signed still verify). An RP that
    cached the JWKS during the publication period already knows the new ``kid`` when the
    first token signed with it arrives (Back-Channel Logout §2.6 step 3 needs the key; an
    RP rate-limits refetches on an unknown ``kid``, OIDC Core §10.1.1). With
    ``publish_for=0``, or when no key of ``alg`` is in service, the new key signs at once.
    The caller commits.
    """
    now = now or utcnow()
    current = list(db.scalars(select(SigningKey).where(SigningKey.alg == alg, _not_retired(now))))
    signing = [k for k in current if k.activates_at is None or k.activates_at <= now]
    activates = now + dt.timedelta(seconds=max(0.0, publish_for)) if signing else now
    for k in current:
        k.retired_at = activates
    key = generate_key(alg)
    db.add(
        SigningKey(
            kid=key["kid"],
            alg=alg,
            private_jwk=_private_json(key),
            created_at=now,
            activates_at=None if activates <= now else activates,
        )
    )
    return str(key["kid"]), activates


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
        self._all: list[LoadedKey] = []
        #: kid -> (stored private JWK, the key parsed from it), kept across reloads.
        self._parsed_keys: dict[str, tuple[str, jwk.JWK]] = {}

    def _load(self) -> None:
        with self._session_factory() as db:
            rows = db.scalars(select(SigningKey).order_by(SigningKey.created_at)).all()
            keys = [(r, self._parsed(r.kid, r.private_jwk)) for r in rows]
        self._parsed_keys = {row.kid: (row.private_jwk, key) for row, key in keys}
        self._all = [
            LoadedKey(row.kid, row.alg, key, row.activates_at, row.retired_at, row.created_at)
            for row, key in keys
        ]
        self._loaded_at = time.monotonic()

    def _parsed(self, kid: str, private_jwk: str) -> jwk.JWK:
        """The key of ``private_jwk``: the object loaded before if the stored key did not
        change, else a new one whose private key is built now. Building an RSA private key
        validates it (about 30 ms of CPU for 2048 bits) and jwcrypto does it lazily at the
        first signature: a key parsed again at every reload made the first deliveries after
        each one pay it, once per delivery thread that signed before the first had finished."""
        known = self._parsed_keys.get(kid)
        if known is not None and known[0] == private_jwk:
            return known[1]
        key = jwk.JWK.from_json(private_jwk)
        if key.has_private:
            key.get_op_key("sign")  # built and validated once, here (jwcrypto caches it)
        return key

    def _signing(self) -> dict[str, LoadedKey]:
        """Per alg, the key that signs now: decided at call time from the cached rows, so a
        published key takes over exactly at its ``activates_at`` whatever the cache age."""
        now = utcnow()
        active: dict[str, LoadedKey] = {}
        for k in self._all:
            if k.signs_at(now) and (k.alg not in active or k.since >= active[k.alg].since):
                active[k.alg] = k
        return active

    def refresh(self) -> None:
        with self._lock:
            self._load()

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at > self._ttl or not self._all:
            with self._lock:
                if time.monotonic() - self._loaded_at > self._ttl or not self._all:
                    self._load()

    def signing_key(self, alg: str) -> LoadedKey:
        """The key signing for ``alg`` now; raises KeyError if the OP has none for it."""
        self._fresh()
        return self._signing()[alg]

    def public_jwks(self) -> dict[str, list[dict[str, object]]]:
        """The JWKS document: every key, published-not-yet-signing, signing and retired,
        public parts only."""
        self._fresh()
        out = []
        for k in self._all:
            pub = json.loads(k.key.export_public())
            pub.update({"kid": k.kid, "alg": k.alg, "use": "sig"})
            out.append(pub)
        return {"keys": out}

    def algs(self) -> list[str]:
        """The algorithms with a signing key now (discovery's
        ``id_token_signing_alg_values_supported``)."""
        self._fresh()
        return sorted(self._signing())


__all__ = [
    "SUPPORTED_ALGS",
    "KeyRing",
    "LoadedKey",
    "ensure_keys",
    "generate_key",
    "rotate_key",
    "signing_algs",
]
