"""SETValidator: every rule of RFC 8417, SSF 1.0 §3-§4 and the CAEP Interoperability Profile
refuses a SET that breaks it, with the RFC 8935 §2.4 error code. SETs are signed by joserfc and
verified against the loopback transmitter's JWKS."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc import jwe
from joserfc.jwk import ECKey, OctKey

from oidc_logout.rp import MemoryReplayCache, SETError
from oidc_logout.rp.ssf import ACCOUNT_DISABLED, CREDENTIAL_CHANGE, STREAM_UPDATED, VERIFICATION
from oidc_logout.rp.ssf_errors import SETReplayed, SETUnavailableError

from .conftest import AUDIENCE, NOW, build_validator, make_set, rsa, set_claims, sign


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def rejected(validator, token) -> SETError:
    with pytest.raises(SETError) as info:
        validator.validate(token)
    return info.value


def test_a_valid_caep_session_revoked_set_is_accepted(validator, transmitter):
    """The baseline: a joserfc-signed SSF SET passes and its subject is parsed (RFC 9493)."""
    event = validator.validate(make_set(transmitter.issuer))
    assert event.iss == transmitter.issuer and event.aud == (AUDIENCE,)
    assert event.event_type.endswith("/session-revoked")
    assert event.subject.parts["session"].opaque_id == "op-sid-1"
    assert event.subject.parts["user"].iss_sub == (transmitter.issuer, "alice")
    assert event.reason_admin == {"en": "User logout"} and event.txn == "txn-1"


# -- JOSE layer ----------------------------------------------------------------------------


def test_unsigned_set_alg_none_is_refused(validator, transmitter):
    """RFC 8725 §3.1 / RFC 8417 §5: an unsigned SET cannot be attributed to the transmitter."""
    header = {"alg": "none", "typ": "secevent+jwt"}
    token = f"{_b64(header)}.{_b64(set_claims(transmitter.issuer))}."
    exc = rejected(validator, token)
    assert (exc.err, exc.reason) == ("invalid_request", "alg_not_allowed")


def test_hmac_signed_set_is_refused(validator, transmitter):
    """RFC 8725 §3.2: HMAC with a public key set would let anyone forge SETs."""
    token = sign(set_claims(transmitter.issuer), OctKey.generate_key(256), alg="HS256", kid="k1")
    assert rejected(validator, token).reason == "alg_not_allowed"


def test_es256_set_is_refused_when_the_profile_requires_rs256(validator, transmitter):
    """CAEP Interoperability Profile §2.6: "All events MUST be signed using the RS256 algorithm"."""
    ec = ECKey.generate_key("P-256", parameters={"kid": "k1"}, auto_kid=False)
    token = sign(set_claims(transmitter.issuer), ec, alg="ES256")
    assert rejected(validator, token).reason == "alg_not_allowed"


def test_encrypted_set_is_refused(validator, transmitter):
    """RFC 8417 §2 allows JWE; this receiver holds no decryption key and says so."""
    token = jwe.encrypt_compact(
        {"alg": "RSA-OAEP", "enc": "A128GCM", "typ": "secevent+jwt"},
        json.dumps(set_claims(transmitter.issuer)),
        rsa("k1"),
        algorithms=["RSA-OAEP", "A128GCM"],
    )
    assert token.count(".") == 4
    exc = rejected(validator, token)
    assert (exc.err, exc.reason) == ("invalid_request", "encrypted_not_supported")


@pytest.mark.parametrize("typ", [None, "JWT", "logout+jwt", "at+jwt"])
def test_set_without_the_secevent_typ_is_refused(validator, transmitter, typ):
    """SSF 1.0 §4.1.1: "SSF events MUST use explicit typing" (typ secevent+jwt)."""
    token = make_set(transmitter.issuer, header={"typ": typ})
    exc = rejected(validator, token)
    assert (exc.err, exc.reason) == ("invalid_request", "typ_invalid")


def test_typ_with_application_prefix_is_accepted(validator, transmitter):
    """RFC 7515 §4.1.9: the "application/" prefix may be present, compared case-insensitively."""
    validator.validate(make_set(transmitter.issuer, header={"typ": "application/SECEVENT+JWT"}))


def test_critical_header_extension_is_refused(validator, transmitter):
    """RFC 7515 §4.1.11: an unknown critical extension makes the JWS invalid."""
    # joserfc refuses to sign this header, and the check comes before the signature anyway.
    header = {"alg": "RS256", "kid": "k1", "typ": "secevent+jwt", "crit": ["x-ext"], "x-ext": 1}
    token = f"{_b64(header)}.{_b64(set_claims(transmitter.issuer))}.c2ln"
    assert rejected(validator, token).reason == "crit_unsupported"


def test_unknown_kid_is_refused_after_one_jwks_refresh(validator, transmitter):
    """SSF 1.0 §4.1.4 + key rotation: an unknown kid refetches the JWKS once, then invalid_key."""
    validator.validate(make_set(transmitter.issuer))
    before = transmitter.requests["/jwks"]
    exc = rejected(validator, make_set(transmitter.issuer, key=rsa("stranger")))
    assert (exc.err, exc.reason) == ("invalid_key", "unknown_kid")
    assert transmitter.requests["/jwks"] == before + 1


def test_rotated_key_is_picked_up_by_the_refresh(validator, transmitter):
    """A SET signed with a newly published key passes after the one refetch."""
    validator.validate(make_set(transmitter.issuer))
    transmitter.keys.append(rsa("k2"))
    assert validator.validate(make_set(transmitter.issuer, key=rsa("k2"))).jti


def test_signature_by_another_key_is_authentication_failed(validator, transmitter):
    """RFC 8935 §2.4 authentication_failed: the signature does not come from the transmitter."""
    impostor = rsa("impostor")
    token = sign(set_claims(transmitter.issuer), impostor, kid="k1")
    exc = rejected(validator, token)
    assert (exc.err, exc.reason) == ("authentication_failed", "bad_signature")


def test_rsa_key_shorter_than_2048_bits_is_invalid_key(transmitter, ssf_clock):
    """CAEP Interoperability Profile §2.6: RS256 "using a minimum of 2048-bit keys"."""
    validator = build_validator(transmitter, ssf_clock, min_rsa_bits=4096)  # k1 is 2048 bits
    exc = rejected(validator, make_set(transmitter.issuer))
    assert (exc.err, exc.reason) == ("invalid_key", "key_too_small")


def test_unreachable_jwks_is_unavailable_not_a_rejection(transmitter, ssf_clock):
    """The receiver's own dependency failing must make the transmitter retry (503), not drop."""
    validator = build_validator(transmitter, ssf_clock)
    token = make_set(transmitter.issuer)
    transmitter.stop()
    with pytest.raises(SETUnavailableError) as info:
        validator.validate(token)
    assert info.value.status == 503


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30."])
def test_malformed_compact_serialization_is_invalid_request(validator, token):
    """RFC 7519 §7.2: only a JWS compact serialization is a SET here."""
    assert rejected(validator, token).err == "invalid_request"


# -- claims (RFC 8417 §2.2, SSF 1.0 §4) ------------------------------------------------------


def test_foreign_issuer_is_invalid_issuer(validator, transmitter):
    """SSF 1.0 §4.1.6: iss MUST match the configured transmitter (RFC 8935 invalid_issuer)."""
    exc = rejected(validator, make_set(transmitter.issuer, iss="https://evil.example"))
    assert (exc.err, exc.reason) == ("invalid_issuer", "iss_mismatch")


@pytest.mark.parametrize("aud", ["https://other.example", ["https://a", "https://b"], [], 42, None])
def test_set_for_another_audience_is_invalid_audience(validator, transmitter, aud):
    """RFC 8417 §2.2 / RFC 7519 §4.1.3: aud must name this receiver (RFC 8935 invalid_audience)."""
    exc = rejected(validator, make_set(transmitter.issuer, aud=aud))
    assert (exc.err, exc.reason) == ("invalid_audience", "aud_mismatch")


def test_aud_array_containing_the_receiver_is_accepted(validator, transmitter):
    """SSF 1.0 §4.1.8: aud may be an array naming several receivers of one entity."""
    event = validator.validate(make_set(transmitter.issuer, aud=["https://rp.example/mobile", AUDIENCE]))
    assert AUDIENCE in event.aud


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iat": None}, "iat_missing"),
        ({"iat": "1700000000"}, "iat_missing"),
        ({"iat": int(NOW) + 3600}, "iat_in_future"),
        ({"iat": int(NOW) - 8 * 86400}, "iat_too_old"),
        ({"jti": None}, "jti_missing"),
        ({"jti": ""}, "jti_missing"),
        ({"exp": int(NOW) + 60}, "exp_present"),
        ({"sub": "alice"}, "sub_present"),
        ({"txn": 5}, "txn_invalid"),
        ({"sub_id": None}, "sub_id_missing"),
        ({"events": None}, "events_missing"),
        ({"events": {}}, "events_missing"),
        ({"events": []}, "events_missing"),
    ],
)
def test_claim_rules_refuse_the_set(validator, transmitter, overrides, reason):
    """RFC 8417 §2.2 (iat, jti, events REQUIRED), SSF 1.0 §4.1.2 (no sub), §4.1.7 (no exp),
    §4.1.9 (txn a string), §3.1 (sub_id REQUIRED)."""
    exc = rejected(validator, make_set(transmitter.issuer, **overrides))
    assert (exc.err, exc.reason) == ("invalid_request", reason)


def test_iat_within_the_skew_is_accepted(validator, transmitter):
    """RFC 8417 §2.2 iat: a small clock skew is tolerated (leeway)."""
    validator.validate(make_set(transmitter.issuer, iat=int(NOW) + 30))


def test_exp_is_accepted_only_when_allowed_and_then_enforced(transmitter, ssf_clock):
    """SSF 1.0 §4.1.7 forbids exp; with allow_exp (older transmitters) an expired SET still fails."""
    validator = build_validator(transmitter, ssf_clock, allow_exp=True)
    validator.validate(make_set(transmitter.issuer, exp=int(NOW) + 60))
    exc = rejected(validator, make_set(transmitter.issuer, exp=int(NOW) - 600))
    assert exc.reason == "expired"


def test_two_events_in_one_set_are_refused(validator, transmitter):
    """CAEP Interoperability Profile §2.8.1: "The events claim ... MUST contain only one event"."""
    events = {
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked": {},
        "https://schemas.openid.net/secevent/risc/event-type/account-disabled": {},
    }
    assert rejected(validator, make_set(transmitter.issuer, events=events)).reason == "events_not_one"


def test_event_value_that_is_not_an_object_is_refused(validator, transmitter):
    """RFC 8417 §2.2: each events member value "MUST be a JSON object"."""
    events = {"https://schemas.openid.net/secevent/caep/event-type/session-revoked": "yes"}
    assert rejected(validator, make_set(transmitter.issuer, events=events)).reason == "event_not_object"


@pytest.mark.parametrize(
    "sub_id",
    [
        "alice",
        {"sub": "alice"},
        {"format": "iss_sub", "iss": "https://op"},
        {"format": "email"},
        {"format": "opaque", "id": ""},
        {"format": "complex"},
        {"format": "complex", "user": {"format": "complex", "user": {"format": "opaque", "id": "x"}}},
        {"format": "aliases", "identifiers": []},
        {"format": "ip-addresses", "ip-addresses": "10.0.0.1"},
    ],
)
def test_malformed_subject_identifier_is_refused(validator, transmitter, sub_id):
    """RFC 9493 §3 (format REQUIRED, each format's members), SSF 1.0 §3.3 (complex subjects)."""
    exc = rejected(validator, make_set(transmitter.issuer, sub_id=sub_id))
    assert (exc.err, exc.reason) == ("invalid_request", "sub_id_invalid")


@pytest.mark.parametrize(
    "sub_id",
    [
        {"format": "email", "email": "alice@example.com"},
        {"format": "iss_sub", "iss": "https://op", "sub": "alice"},
        {"format": "opaque", "id": "op-sid-1"},
        {"format": "phone_number", "phone_number": "+12065550100"},
        {"format": "account", "uri": "acct:alice@example.com"},
        {"format": "aliases", "identifiers": [{"format": "email", "email": "a@example.com"}]},
        {"format": "x-proprietary", "anything": 1},
    ],
)
def test_every_rfc9493_format_and_agreed_formats_parse(validator, transmitter, sub_id):
    """CAEP Interoperability Profile §2.5 (email, iss_sub, opaque MUST be supported); SSF 1.0
    §3.4 allows formats agreed between the parties."""
    assert validator.validate(make_set(transmitter.issuer, sub_id=sub_id)).subject.format == sub_id["format"]


# -- event payloads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "event", "reason"),
    [
        (CREDENTIAL_CHANGE, {"change_type": "update"}, "credential_type_missing"),
        (CREDENTIAL_CHANGE, {"credential_type": "password", "change_type": "rotate"}, "change_type_invalid"),
        (STREAM_UPDATED, {"status": "sleeping"}, "status_invalid"),
        (VERIFICATION, {"state": 7}, "state_invalid"),
        (ACCOUNT_DISABLED, {"reason": ["hijacking"]}, "reason_invalid"),
        (
            CREDENTIAL_CHANGE,
            {"credential_type": "x", "change_type": "create", "initiating_entity": "bot"},
            "initiating_entity_invalid",
        ),
        (
            CREDENTIAL_CHANGE,
            {"credential_type": "x", "change_type": "create", "reason_admin": "oops"},
            "reason_admin_invalid",
        ),
        (
            CREDENTIAL_CHANGE,
            {"credential_type": "x", "change_type": "create", "event_timestamp": "now"},
            "event_timestamp_invalid",
        ),
    ],
)
def test_event_payload_not_per_its_definition_is_refused(validator, transmitter, event_type, event, reason):
    """RFC 8935 §2.4 invalid_request: "the Event Payload within the SET does not conform to the
    event's definition" (CAEP 1.0 §2, §3.3.1; SSF 1.0 §8.1.4.1, §8.1.5; RISC 1.0 §2.3)."""
    sub_id = {"format": "opaque", "id": "stream-1"}
    exc = rejected(validator, make_set(transmitter.issuer, event_type=event_type, event=event, sub_id=sub_id))
    assert (exc.err, exc.reason) == ("invalid_request", reason)


def test_stream_event_about_a_user_subject_is_refused(validator, transmitter):
    """SSF 1.0 §8.1.4.1: a verification event's sub_id MUST be an opaque stream id."""
    token = make_set(transmitter.issuer, event_type=VERIFICATION, event={})
    assert rejected(validator, token).reason == "sub_id_not_stream"


def test_unknown_members_are_ignored(validator, transmitter):
    """SSF 1.0 §4.2.3: "Receivers MUST ignore any fields they do not understand"."""
    event = {"credential_type": "password", "change_type": "update", "x-vendor": {"a": 1}}
    token = make_set(transmitter.issuer, event_type=CREDENTIAL_CHANGE, event=event, x_extra=True)
    assert validator.validate(token).event["x-vendor"] == {"a": 1}


# -- replay ----------------------------------------------------------------------------------


def test_second_copy_of_a_set_is_a_replay(validator, transmitter):
    """RFC 8417 §2.2 jti: the same jti from the same issuer is recognised as a duplicate."""
    token = make_set(transmitter.issuer)
    first = validator.validate(token)
    with pytest.raises(SETReplayed) as info:
        validator.validate(token)
    assert info.value.event.jti == first.jti


def test_replay_store_is_shared_with_backchannel_logout_without_collisions(transmitter, ssf_clock):
    """One store for logout tokens and SETs: a logout token's jti never blocks a SET's."""
    shared = MemoryReplayCache(clock=ssf_clock)
    assert shared.add_if_absent(transmitter.issuer, "same-jti", NOW + 300)  # a logout token
    validator = build_validator(transmitter, ssf_clock, replay_cache=shared)
    validator.validate(make_set(transmitter.issuer, jti="same-jti"))
    with pytest.raises(SETReplayed):
        validator.validate(make_set(transmitter.issuer, jti="same-jti"))


def test_an_empty_shared_replay_store_is_used_not_replaced(transmitter, ssf_clock):
    """The store handed in is the one written to, even while it is still empty."""
    shared = MemoryReplayCache(clock=ssf_clock)
    validator = build_validator(transmitter, ssf_clock, replay_cache=shared)
    assert validator.replay_cache is shared
    validator.validate(make_set(transmitter.issuer))
    assert len(shared) == 1


def test_invalid_set_does_not_burn_its_jti(validator, transmitter):
    """The jti is claimed only after every check passed."""
    claims = set_claims(transmitter.issuer)
    rejected(validator, sign({**claims, "aud": "https://other"}))
    validator.validate(sign(claims))
