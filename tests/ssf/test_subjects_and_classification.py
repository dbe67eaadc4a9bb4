"""RFC 9493 subject identifiers, SSF §8.1.3.1 subject matching and the RFC 8935 §2.2-§2.4
classification of a receiver's answer (pure functions, spec examples as data)."""

from __future__ import annotations

import pytest

from oidc_logout.errors import InvalidRequest
from oidc_logout.ssf.push import classify_push_response
from oidc_logout.ssf.subjects import event_subject, matches, validate

JDOE = {"format": "email", "email": "jdoe@example.com"}
TENANT = {"format": "opaque", "id": "example-a38h4792-uw2"}


def test_a_complex_subject_less_restrictive_than_the_events_matches():
    """SSF §8.1.3.1, first example: tenant only vs tenant + user."""
    assert matches(
        {"format": "complex", "tenant": TENANT}, {"format": "complex", "tenant": TENANT, "user": JDOE}
    )


def test_a_complex_subject_more_restrictive_than_the_events_matches():
    """SSF §8.1.3.1, second example: user + device vs user only."""
    stored = {
        "format": "complex",
        "user": JDOE,
        "device": {"format": "ip-addresses", "ip-addresses": ["10.29.37.75"]},
    }
    assert matches(stored, {"format": "complex", "user": JDOE})


def test_complex_subjects_differing_in_a_member_do_not_match():
    """SSF §8.1.3.1, third example: same user, different group."""
    a = {"format": "complex", "user": JDOE, "group": {"format": "did", "url": "did:example:123456"}}
    b = {"format": "complex", "user": JDOE, "group": {"format": "did", "url": "did:example:9999999"}}
    assert not matches(a, b)


def test_simple_subjects_match_only_when_identical():
    assert matches(JDOE, dict(JDOE))
    assert not matches(JDOE, {"format": "email", "email": "other@example.com"})
    # A simple subject matches a complex one that has it as a member.
    assert matches(JDOE, {"format": "complex", "user": JDOE})


@pytest.mark.parametrize(
    "bad",
    [
        "alice",
        {"email": "a@example.com"},
        {"format": "email", "email": "no-at-sign"},
        {"format": "iss_sub", "iss": "https://op.example"},
        {"format": "carrier-pigeon", "id": "x"},
        {"format": "complex"},
        {"format": "opaque", "id": "x" * 2000},
    ],
)
def test_malformed_subject_identifiers_are_refused(bad):
    with pytest.raises(InvalidRequest):
        validate(bad)


def test_event_subjects_in_each_stream_format():
    assert event_subject("iss_sub", "https://op", "alice", "s1") == {
        "format": "iss_sub",
        "iss": "https://op",
        "sub": "alice",
    }
    assert event_subject("opaque", "https://op", "alice", "s1") == {"format": "opaque", "id": "s1"}
    assert event_subject("complex", "https://op", "alice", "s1") == {
        "format": "complex",
        "user": {"format": "iss_sub", "iss": "https://op", "sub": "alice"},
        "session": {"format": "opaque", "id": "s1"},
    }
    # No directory to vouch for an address: iss_sub, never a guessed email.
    assert event_subject("email", "https://op", "alice")["format"] in ("iss_sub", "email")


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (202, b"", "delivered"),  # RFC 8935 §2.2
        (400, b'{"err": "invalid_request"}', "failed"),  # §2.3/§2.4
        (400, b'{"err": "invalid_audience", "description": "x"}', "failed"),
        (400, b'{"err": "invalid_key"}', "retry"),  # keys lag a rotation
        (401, b"", "failed"),
        (403, b"", "failed"),
        (302, b"", "failed"),  # redirects are never followed
        (503, b"", "retry"),
        (429, b"", "retry"),
    ],
)
def test_receiver_answers_are_classified_as_rfc_8935_says(status, body, outcome):
    got, _error, _after = classify_push_response(
        status, {}, body, False, retry_after_cap=60, key_retry_delay=5
    )
    assert got == outcome
