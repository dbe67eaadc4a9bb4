"""Logout tokens: header and every claim (Back-Channel Logout 1.0 §2.4 with errata)."""

from __future__ import annotations

import json
import time

import pytest
from jwcrypto import jwk, jws, jwt

from oidc_logout.backchannel.logout_token import (
    BACKCHANNEL_LOGOUT_EVENT,
    logout_token_claims,
    sign_logout_token,
)
from oidc_logout.delivery.dispatcher import Dispatcher

from .conftest import DB, ISSUER, Reply, RPServer, fast_settings


def verify(token: str, db: DB) -> tuple[dict, dict]:
    """Verify with the OP's *public* JWKS; return (header, claims)."""
    keyset = jwk.JWKSet.from_json(json.dumps(db.keyring.public_jwks()))
    parsed = jwt.JWT(jwt=token, key=keyset, check_claims=False, expected_type="JWS")
    sig = jws.JWS()
    sig.deserialize(token)
    return dict(sig.jose_header), json.loads(parsed.claims)


def test_token_header_and_claims_are_complete_and_verifiable(sqlite_db: DB) -> None:
    key = sqlite_db.keyring.signing_key("RS256")
    now = int(time.time())
    claims = logout_token_claims(issuer=ISSUER, client_id="rp1", sub="alice", sid="s1", now=now, lifetime=120)
    header, got = verify(sign_logout_token(claims, key), sqlite_db)
    assert header == {"alg": "RS256", "typ": "logout+jwt", "kid": key.kid}
    assert got["iss"] == ISSUER and got["aud"] == "rp1"
    assert got["iat"] == now and got["exp"] == now + 120
    assert got["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert got["sub"] == "alice" and got["sid"] == "s1"
    assert len(got["jti"]) >= 22  # >= 128 bits base64url
    assert "nonce" not in got


def test_sid_only_and_sub_only_tokens_omit_the_other_claim() -> None:
    c1 = logout_token_claims(issuer=ISSUER, client_id="rp", sub=None, sid="s", now=1, lifetime=5)
    c2 = logout_token_claims(issuer=ISSUER, client_id="rp", sub="u", sid=None, now=1, lifetime=5)
    assert "sub" not in c1 and c1["sid"] == "s"
    assert "sid" not in c2 and c2["sub"] == "u"


def test_token_without_sub_and_sid_is_refused() -> None:
    with pytest.raises(ValueError):
        logout_token_claims(issuer=ISSUER, client_id="rp", sub=None, sid=None, now=1, lifetime=5)


def test_nonce_is_never_signed(sqlite_db: DB) -> None:
    claims = logout_token_claims(issuer=ISSUER, client_id="rp", sub="u", sid=None, now=1, lifetime=5)
    claims["nonce"] = "n"
    with pytest.raises(ValueError):
        sign_logout_token(claims, sqlite_db.keyring.signing_key("RS256"))


def test_jti_is_unique_across_many_tokens() -> None:
    jtis = {
        logout_token_claims(issuer=ISSUER, client_id="rp", sub="u", sid=None, now=1, lifetime=5)["jti"]
        for _ in range(2000)
    }
    assert len(jtis) == 2000


def test_delivered_token_uses_the_clients_alg_and_verifies(sqlite_db: DB, rp: RPServer) -> None:
    ids = sqlite_db.add_deliveries([rp.url("/es")], alg="ES256", sid="sid-es", subject=None)
    disp = Dispatcher(sqlite_db.factory, sqlite_db.keyring, fast_settings())
    try:
        assert disp.run_once() == {"delivered": 1}
    finally:
        disp.stop()
    (hit,) = rp.hits("/es")
    assert hit.headers["Content-Type"] == "application/x-www-form-urlencoded"
    header, claims = verify(hit.form["logout_token"][0], sqlite_db)
    assert header["alg"] == "ES256" and header["typ"] == "logout+jwt"
    assert header["kid"] == sqlite_db.keyring.signing_key("ES256").kid
    row = sqlite_db.get(ids[0])
    assert claims["aud"] == row.client_id and claims["sid"] == "sid-es"
    assert "sub" not in claims and "nonce" not in claims
    assert claims["exp"] - claims["iat"] == fast_settings().logout_token_lifetime
    assert row.attempt_log[0].jti == claims["jti"]


def test_every_attempt_gets_a_fresh_token_and_jti(sqlite_db: DB, rp: RPServer) -> None:
    ids = sqlite_db.add_deliveries([rp.url("/flaky", Reply(500), Reply(503), Reply(200))])
    disp = Dispatcher(sqlite_db.factory, sqlite_db.keyring, fast_settings(), poll_interval=0.05)
    try:
        assert disp.deliver_now(ids) == ids
        disp.start()  # the retries are picked up by the polling thread
        assert disp.wait_for(ids, 5)
    finally:
        disp.stop()
    tokens = [h.form["logout_token"][0] for h in rp.hits("/flaky")]
    jtis = [verify(t, sqlite_db)[1]["jti"] for t in tokens]
    assert len(tokens) == 3 and len(set(tokens)) == 3 and len(set(jtis)) == 3
    assert [a.jti for a in sqlite_db.get(ids[0]).attempt_log] == jtis
