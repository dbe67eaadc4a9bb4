"""One case per logout-token validation rule (Back-Channel Logout 1.0 §2.6, RFC 8725)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwk

from oidc_logout.rp import LogoutTokenError, LogoutTokenValidator, StaticKeys

from .tokens import CLIENT_ID, NOW, claims, ec_key, logout_token, public_jwks, rsa_key, sign

ISS = "https://op.example"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_validator(clock: Callable[[], float] = lambda: NOW, **kw: Any) -> LogoutTokenValidator:
    keys = StaticKeys(public_jwks(rsa_key("k1"), ec_key("e1")))
    return LogoutTokenValidator(issuer=ISS, client_id=CLIENT_ID, keys=keys, clock=clock, **kw)


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256_with_public_key() -> str:
    # The classic RS256→HS256 confusion: HMAC keyed with the OP's public key material.
    pub = rsa_key("k1").export_to_pem()
    oct_key = jwk.JWK(kty="oct", k=b64(pub), kid="k1")
    return sign(claims(ISS), oct_key, "HS256")


REJECTED: list[tuple[str, Callable[[], str], dict[str, Any], str]] = [
    ("oversized_token", lambda: "a" * 9000, {}, "too_large"),
    ("two_part_token", lambda: "abc.def", {}, "malformed"),
    ("header_not_base64url", lambda: "!!!." + b64(b"{}") + ".sig", {}, "malformed"),
    ("header_not_json_object", lambda: b64(b"[1]") + "." + b64(b"{}") + ".c2ln", {}, "malformed"),
    ("json_serialization", lambda: json.dumps({"payload": "e30", "signatures": []}), {}, "malformed"),
    ("jwe_compact", lambda: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", {}, "encrypted_not_supported"),
    ("alg_none", lambda: unsigned({"alg": "none"}, claims(ISS)), {}, "alg_not_allowed"),
    ("alg_hs256_with_public_key", hs256_with_public_key, {}, "alg_not_allowed"),
    (
        "alg_outside_configured_allowlist",
        lambda: logout_token(ISS, ec_key("e1"), alg="ES256"),
        {"allowed_algs": ["RS256"]},
        "alg_not_allowed",
    ),
    ("typ_of_another_jwt_kind", lambda: logout_token(ISS, header={"typ": "at+jwt"}), {}, "typ_invalid"),
    (
        "typ_absent_in_strict_mode",
        lambda: logout_token(ISS, header={"typ": None}),
        {"strict_typ": True},
        "typ_invalid",
    ),
    (
        "typ_jwt_in_strict_mode",
        lambda: logout_token(ISS, header={"typ": "JWT"}),
        {"strict_typ": True},
        "typ_invalid",
    ),
    (
        "crit_header",
        lambda: unsigned({"alg": "RS256", "kid": "k1", "crit": ["exp"], "exp": 1}, claims(ISS)) + "c2ln",
        {},
        "crit_unsupported",
    ),
    ("unknown_kid", lambda: logout_token(ISS, rsa_key("other")), {}, "unknown_kid"),
    (
        "signature_by_wrong_key_with_known_kid",
        lambda: sign(claims(ISS), jwk.JWK.generate(kty="RSA", size=2048, kid="k1")),
        {},
        "bad_signature",
    ),
    (
        "tampered_payload",
        lambda: (
            lambda t: (
                t.split(".")[0]
                + "."
                + b64(json.dumps(claims(ISS, sub="admin")).encode())
                + "."
                + t.split(".")[2]
            )
        )(logout_token(ISS)),
        {},
        "bad_signature",
    ),
    ("payload_not_json", lambda: sign("not json", rsa_key("k1")), {}, "malformed"),
    (
        "duplicate_claim_names",
        lambda: sign(json.dumps(claims(ISS))[:-1] + ', "iss": "https://evil.example"}', rsa_key("k1")),
        {},
        "malformed",
    ),
    ("iss_mismatch", lambda: logout_token("https://evil.example"), {}, "iss_mismatch"),
    ("iss_with_trailing_slash", lambda: logout_token(ISS + "/"), {}, "iss_mismatch"),
    ("aud_other_client", lambda: logout_token(ISS, aud="other"), {}, "aud_mismatch"),
    ("aud_array_without_client", lambda: logout_token(ISS, aud=["a", "b"]), {}, "aud_mismatch"),
    ("aud_missing", lambda: logout_token(ISS, aud=None), {}, "aud_mismatch"),
    ("iat_missing", lambda: logout_token(ISS, iat=None), {}, "iat_missing"),
    ("iat_not_a_number", lambda: logout_token(ISS, iat="1700000000"), {}, "iat_missing"),
    ("iat_too_old", lambda: logout_token(ISS, iat=int(NOW) - 600, exp=int(NOW) + 60), {}, "iat_too_old"),
    ("iat_in_future", lambda: logout_token(ISS, iat=int(NOW) + 300, exp=int(NOW) + 400), {}, "iat_in_future"),
    ("exp_missing", lambda: logout_token(ISS, exp=None), {}, "exp_missing"),
    ("expired", lambda: logout_token(ISS, exp=int(NOW) - 120), {}, "expired"),
    ("jti_missing", lambda: logout_token(ISS, jti=None), {}, "jti_missing"),
    ("jti_empty", lambda: logout_token(ISS, jti=""), {}, "jti_missing"),
    ("events_missing", lambda: logout_token(ISS, events=None), {}, "events_missing"),
    (
        "events_without_backchannel_member",
        lambda: logout_token(ISS, events={"http://schemas.openid.net/event/other": {}}),
        {},
        "events_invalid",
    ),
    (
        "events_member_not_object",
        lambda: logout_token(ISS, events={"http://schemas.openid.net/event/backchannel-logout": "yes"}),
        {},
        "events_invalid",
    ),
    ("sid_and_sub_missing", lambda: logout_token(ISS, sid=None, sub=None), {}, "sid_sub_missing"),
    ("sid_not_a_string", lambda: logout_token(ISS, sid=123), {}, "sid_sub_missing"),
    ("nonce_present", lambda: logout_token(ISS, nonce="n-0S6_WzA2Mj"), {}, "nonce_present"),
]


@pytest.mark.parametrize(
    ("build", "options", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_logout_token_violating_a_rule_is_rejected_with_its_reason(
    build: Callable[[], str], options: dict[str, Any], reason: str
) -> None:
    validator = make_validator(**options)
    with pytest.raises(LogoutTokenError) as info:
        validator.validate(build())
    assert info.value.reason == reason
    assert info.value.error == "invalid_request"


def test_every_rejection_reason_is_distinct_per_rule() -> None:
    reasons = {c[3] for c in REJECTED}
    assert {
        "too_large",
        "malformed",
        "alg_not_allowed",
        "unknown_kid",
        "bad_signature",
        "iss_mismatch",
        "aud_mismatch",
        "iat_missing",
        "iat_too_old",
        "iat_in_future",
        "exp_missing",
        "expired",
        "jti_missing",
        "events_missing",
        "events_invalid",
        "sid_sub_missing",
        "nonce_present",
        "typ_invalid",
    } <= reasons


ACCEPTED: list[tuple[str, Callable[[], str], dict[str, Any]]] = [
    ("rs256_with_typ_logout_jwt", lambda: logout_token(ISS), {}),
    (
        "es256_when_registered",
        lambda: logout_token(ISS, ec_key("e1"), alg="ES256"),
        {"allowed_algs": ["ES256"]},
    ),
    ("ps256_when_registered", lambda: logout_token(ISS, alg="PS256"), {"allowed_algs": "PS256"}),
    ("typ_absent", lambda: logout_token(ISS, header={"typ": None}), {}),
    ("typ_generic_jwt", lambda: logout_token(ISS, header={"typ": "JWT"}), {}),
    (
        "typ_with_media_type_prefix",
        lambda: logout_token(ISS, header={"typ": "application/logout+jwt"}),
        {"strict_typ": True},
    ),
    ("aud_array_with_client", lambda: logout_token(ISS, aud=["other", CLIENT_ID]), {}),
    ("sid_only", lambda: logout_token(ISS, sub=None), {}),
    ("sub_only", lambda: logout_token(ISS, sid=None), {}),
    ("no_kid_single_matching_key", lambda: logout_token(ISS, header={"kid": None}), {}),
    ("exp_missing_when_allowed_for_old_ops", lambda: logout_token(ISS, exp=None), {"require_exp": False}),
    ("iat_within_leeway_in_future", lambda: logout_token(ISS, iat=int(NOW) + 30), {}),
    ("unknown_extra_claims_ignored", lambda: logout_token(ISS, foo={"bar": 1}), {}),
]


@pytest.mark.parametrize(("build", "options"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_valid_logout_token_is_accepted(build: Callable[[], str], options: dict[str, Any]) -> None:
    token = make_validator(**options).validate(build())
    assert token.iss == ISS and CLIENT_ID in token.aud
    assert token.sub or token.sid


def test_validated_token_is_a_frozen_dataclass_with_claims() -> None:
    token = make_validator().validate(logout_token(ISS, jti="j-1"))
    assert (token.sub, token.sid, token.jti, token.iat, token.exp) == (
        "user-42",
        "op-session-1",
        "j-1",
        NOW,
        NOW + 120,
    )
    assert token.aud == (CLIENT_ID,)
    with pytest.raises(AttributeError):
        token.sub = "x"  # type: ignore[misc]


def test_same_jti_twice_is_rejected_as_replayed() -> None:
    validator = make_validator()
    raw = logout_token(ISS, jti="same")
    validator.validate(raw)
    with pytest.raises(LogoutTokenError) as info:
        validator.validate(raw)
    assert info.value.reason == "replayed"


def test_invalid_token_does_not_burn_its_jti() -> None:
    validator = make_validator()
    with pytest.raises(LogoutTokenError):
        validator.validate(logout_token(ISS, jti="j", nonce="x"))
    validator.validate(logout_token(ISS, jti="j"))


def test_time_checks_use_the_injected_clock() -> None:
    now = [NOW]
    validator = make_validator(clock=lambda: now[0])
    raw = logout_token(ISS)
    now[0] = NOW + 10_000
    with pytest.raises(LogoutTokenError) as info:
        validator.validate(raw)
    assert info.value.reason in {"iat_too_old", "expired"}


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512"])
def test_validator_refuses_to_be_configured_with_none_or_hmac(alg: str) -> None:
    with pytest.raises(ValueError):
        make_validator(allowed_algs=["RS256", alg])


def test_rejection_is_logged_by_reason_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    raw = logout_token(ISS, nonce="x")
    with caplog.at_level("INFO", logger="oidc_logout.rp"), pytest.raises(LogoutTokenError):
        make_validator().validate(raw)
    assert "nonce_present" in caplog.text
    assert raw not in caplog.text and raw.split(".")[1] not in caplog.text


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.lists(st.text(alphabet="abcXYZ-_=019", max_size=40), min_size=1, max_size=6).map(".".join),
    )
)
def test_arbitrary_input_only_ever_raises_logout_token_error(data: str | bytes) -> None:
    with pytest.raises(LogoutTokenError):
        make_validator(replay_cache=False).validate(data)
