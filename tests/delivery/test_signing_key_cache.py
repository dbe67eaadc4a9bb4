"""Signing keys are parsed once (issue 15): building an RSA private key validates it (about
30 ms of CPU for 2048 bits). The key ring keeps parsed keys across its reloads (a key parsed
again at every reload made the deliveries right after it pay that, once per delivery thread),
and ID tokens are signed with one ready key object per signing key. A rotated key is
picked up."""

from __future__ import annotations

from jwcrypto import jwk, jws

from oidc_logout.keys import KeyRing, rotate_key

from .conftest import DB


def test_a_reload_keeps_the_key_objects_of_unchanged_keys(sqlite_db: DB) -> None:
    ring = KeyRing(sqlite_db.factory, ttl=0.0)  # every call reloads
    rsa, ec = ring.signing_key("RS256").key, ring.signing_key("ES256").key
    ring.refresh()
    assert ring.signing_key("RS256").key is rsa
    assert ring.signing_key("ES256").key is ec


def test_a_rotated_key_is_a_new_key_and_signs_verifiably(sqlite_db: DB) -> None:
    ring = KeyRing(sqlite_db.factory, ttl=0.0)
    old = ring.signing_key("RS256")
    with sqlite_db.factory.begin() as db:
        kid, _at = rotate_key(db, "RS256")
    ring.refresh()
    new = ring.signing_key("RS256")
    assert new.kid == kid != old.kid
    assert new.key is not old.key
    token = jws.JWS(b"payload")
    token.add_signature(new.key, alg="RS256", protected={"alg": "RS256"})
    check = jws.JWS()
    check.deserialize(token.serialize(compact=True))
    check.verify(jwk.JWK(**new.key.export_public(as_dict=True)))
    assert check.payload == b"payload"


def test_id_tokens_are_signed_with_one_key_object_per_signing_key(sqlite_db: DB) -> None:
    """Authlib imports a key given as a dict for every ID token (an RSA import validates the
    key: ~30 ms of CPU); the OP hands it the same ready key object each time, and a new one
    after a rotation. The object signs tokens the published key verifies."""
    from joserfc import jwt
    from joserfc.jwk import KeySet

    from oidc_logout.core.grants import signing_key_for_authlib

    ring = KeyRing(sqlite_db.factory, ttl=0.0)
    first = signing_key_for_authlib(ring.signing_key("RS256"))
    ring.refresh()
    assert signing_key_for_authlib(ring.signing_key("RS256")) is first
    with sqlite_db.factory.begin() as db:
        rotate_key(db, "RS256")
    ring.refresh()
    rotated = ring.signing_key("RS256")
    key = signing_key_for_authlib(rotated)
    assert key is not first
    token = jwt.encode({"alg": "RS256", "kid": rotated.kid}, {"sub": "alice"}, key, ["RS256"])
    decoded = jwt.decode(token, KeySet.import_key_set(ring.public_jwks()), ["RS256"])
    assert decoded.claims == {"sub": "alice"}
