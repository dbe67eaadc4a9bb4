"""SSFReceiver: what each event does to local sessions (through the back-channel session
index), verification and stream state, callbacks, duplicates; and the framework-free RFC 8935
push handler's responses."""

from __future__ import annotations

import json

import pytest

from oidc_logout.rp import MemoryReplayCache, SETError, SSFReceiver
from oidc_logout.rp.ssf import ACCOUNT_DISABLED, CREDENTIAL_CHANGE, STREAM_UPDATED, VERIFICATION

from .conftest import NOW, build_validator, make_set


@pytest.fixture
def sessions(index, transmitter):
    """alice has two RP sessions from two OP sessions; bob one."""
    iss = transmitter.issuer
    index.register(iss, "alice", "op-sid-1", "local-a1")
    index.register(iss, "alice", "op-sid-2", "local-a2")
    index.register(iss, "bob", "op-sid-3", "local-b1")
    return index


def session_subject(sid: str, issuer: str, sub: str = "alice") -> dict:
    return {
        "format": "complex",
        "session": {"format": "opaque", "id": sid},
        "user": {"format": "iss_sub", "iss": issuer, "sub": sub},
    }


def test_session_revoked_for_a_session_ends_only_that_session(receiver, sessions, transmitter):
    """CAEP 1.0 §3.1: the session the subject names ends (like a logout token with sid)."""
    record = receiver.receive(
        make_set(transmitter.issuer, sub_id=session_subject("op-sid-1", transmitter.issuer))
    )
    assert record.outcome == "processed" and record.ended == {"local-a1"}
    assert receiver.ended_log == ["local-a1"]
    assert sessions.local_sessions_for(transmitter.issuer, sub="alice") == {"local-a2"}


def test_session_revoked_with_a_simple_opaque_subject_ends_that_session(receiver, sessions, transmitter):
    """CAEP 1.0 §3.1 example 1: a simple opaque subject is the session identifier."""
    record = receiver.receive(make_set(transmitter.issuer, sub_id={"format": "opaque", "id": "op-sid-3"}))
    assert record.ended == {"local-b1"}


def test_session_revoked_for_a_user_ends_all_of_the_users_sessions(receiver, sessions, transmitter):
    """An iss_sub subject (RFC 9493 §3.2.5) ends every session of that user (by sub)."""
    sub_id = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"}
    record = receiver.receive(make_set(transmitter.issuer, sub_id=sub_id))
    assert record.ended == {"local-a1", "local-a2"}
    assert sessions.local_sessions_for(transmitter.issuer, sub="bob") == {"local-b1"}


def test_user_of_another_issuer_ends_nothing(receiver, sessions, transmitter):
    """A transmitter cannot end sessions another OP established: iss_sub of an untrusted iss."""
    sub_id = {"format": "iss_sub", "iss": "https://other-op.example", "sub": "alice"}
    record = receiver.receive(make_set(transmitter.issuer, sub_id=sub_id))
    assert record.outcome == "processed" and record.ended == frozenset()
    assert receiver.ended_log == []


def test_email_subject_ends_sessions_through_the_resolver(transmitter, ssf_clock, sessions):
    """CAEP Interoperability Profile §2.5: email subjects are accepted; the app maps them."""
    ended: list[str] = []
    receiver = SSFReceiver(
        build_validator(transmitter, ssf_clock),
        sessions,
        ended.append,
        resolve_email=lambda email: ["bob"] if email == "bob@example.com" else [],
    )
    record = receiver.receive(
        make_set(transmitter.issuer, sub_id={"format": "email", "email": "bob@example.com"})
    )
    assert record.ended == {"local-b1"} and ended == ["local-b1"]


def test_account_disabled_ends_every_session_of_the_user_by_default(receiver, sessions, transmitter):
    """RISC 1.0 §2.3 account-disabled: a disabled account keeps no session here."""
    sub_id = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"}
    token = make_set(
        transmitter.issuer, event_type=ACCOUNT_DISABLED, event={"reason": "hijacking"}, sub_id=sub_id
    )
    assert receiver.receive(token).ended == {"local-a1", "local-a2"}


def test_account_disabled_callback_replaces_the_default(transmitter, ssf_clock, sessions):
    """The app decides: its callback runs instead, and what it returns is recorded."""
    seen = []

    def on_disabled(event, rcv):
        seen.append(event.subject.iss_sub)
        return []

    receiver = SSFReceiver(
        build_validator(transmitter, ssf_clock), sessions, list().append, on_account_disabled=on_disabled
    )
    sub_id = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"}
    record = receiver.receive(
        make_set(transmitter.issuer, event_type=ACCOUNT_DISABLED, event={}, sub_id=sub_id)
    )
    assert seen == [(transmitter.issuer, "alice")] and record.ended == frozenset()
    assert sessions.local_sessions_for(transmitter.issuer, sub="alice") == {"local-a1", "local-a2"}


def test_credential_change_reaches_the_apps_callback(transmitter, ssf_clock, sessions):
    """CAEP 1.0 §3.3: credential-change is handed to the app (default: recorded only)."""
    calls = []
    receiver = SSFReceiver(
        build_validator(transmitter, ssf_clock),
        sessions,
        list().append,
        on_credential_change=lambda event, rcv: calls.append(dict(event.event)) or [],
    )
    event = {"credential_type": "password", "change_type": "update", "reason_admin": {"en": "rotated"}}
    sub_id = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"}
    receiver.receive(make_set(transmitter.issuer, event_type=CREDENTIAL_CHANGE, event=event, sub_id=sub_id))
    assert calls == [event]


def test_credential_change_without_callback_is_recorded_and_ends_nothing(receiver, sessions, transmitter):
    event = {"credential_type": "x509", "change_type": "revoke"}
    sub_id = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"}
    record = receiver.receive(
        make_set(transmitter.issuer, event_type=CREDENTIAL_CHANGE, event=event, sub_id=sub_id)
    )
    assert (
        record.outcome == "processed" and not record.ended and "no credential-change callback" in record.note
    )


def test_unknown_event_type_is_acknowledged_and_ignored(receiver, transmitter):
    """RFC 8935 §2: the acknowledgement reports parsing and validation, not event handling."""
    token = make_set(transmitter.issuer, event_type="https://example.com/event/other", event={})
    assert receiver.receive(token).outcome == "ignored"


def test_critical_subject_member_not_understood_discards_the_event(transmitter, ssf_clock, sessions):
    """SSF 1.0 §3.6: "An SSF Receiver MUST discard any event that contains a Subject with a
    Critical member that it is unable to process"."""
    receiver = SSFReceiver(
        build_validator(transmitter, ssf_clock),
        sessions,
        list().append,
        critical_subject_members=["tenant", "user"],
    )
    sub_id = session_subject("op-sid-1", transmitter.issuer)
    sub_id["tenant"] = {"format": "opaque", "id": "t-1"}
    record = receiver.receive(make_set(transmitter.issuer, sub_id=sub_id))
    assert record.outcome == "discarded" and not record.ended
    assert sessions.local_sessions_for(transmitter.issuer, sid="op-sid-1") == {"local-a1"}


def stream_set(issuer: str, event_type: str, event: dict, stream_id: str = "stream-1") -> str:
    return make_set(issuer, event_type=event_type, event=event, sub_id={"format": "opaque", "id": stream_id})


def test_verification_with_the_requested_state_verifies_the_stream(receiver, transmitter):
    """SSF 1.0 §8.1.4.1: the receiver confirms the state it asked for and records the result."""
    receiver.set_stream("stream-1")
    receiver.expect_verification("st-1")
    record = receiver.receive(stream_set(transmitter.issuer, VERIFICATION, {"state": "st-1"}))
    assert record.outcome == "processed"
    assert receiver.stream.verified_at == NOW and receiver.stream.verified_state == "st-1"
    assert receiver.stream.pending_states == set()


def test_verification_with_an_unexpected_state_is_invalid_state(receiver, transmitter):
    """SSF 1.0 §8.1.4.1: "If the value of state does not match, an error response with the err
    field set to invalid_state SHOULD be returned"."""
    receiver.expect_verification("st-1")
    with pytest.raises(SETError) as info:
        receiver.receive(stream_set(transmitter.issuer, VERIFICATION, {"state": "forged"}))
    assert info.value.err == "invalid_state"
    assert receiver.stream.verified_at is None


def test_transmitter_initiated_verification_without_state_is_accepted(receiver, transmitter):
    """SSF 1.0 §8.1.4: "A Transmitter MAY send a Verification Event at any time"."""
    receiver.receive(stream_set(transmitter.issuer, VERIFICATION, {}))
    assert receiver.stream.verified_at == NOW and receiver.stream.verified_state is None


def test_stream_event_for_another_stream_is_refused(receiver, transmitter):
    """SSF 1.0 §8.1.4.1 / §8.1.5: the sub_id id MUST be the stream's id."""
    receiver.set_stream("stream-1")
    with pytest.raises(SETError) as info:
        receiver.receive(
            stream_set(transmitter.issuer, STREAM_UPDATED, {"status": "paused"}, stream_id="other")
        )
    assert info.value.reason == "stream_id_mismatch"


def test_stream_updated_records_the_new_status(receiver, transmitter):
    """SSF 1.0 §8.1.5: the stream-updated event tells the receiver its stream's status."""
    receiver.receive(
        stream_set(transmitter.issuer, STREAM_UPDATED, {"status": "paused", "reason": "maintenance"})
    )
    assert (receiver.stream.status, receiver.stream.status_reason) == ("paused", "maintenance")


def test_duplicate_set_is_acknowledged_without_acting_again(receiver, sessions, transmitter):
    """RFC 8935 §4: a transmitter may send a SET again; the second copy changes nothing."""
    token = make_set(
        transmitter.issuer, sub_id={"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice"}
    )
    first = receiver.receive(token)
    sessions.register(transmitter.issuer, "alice", "op-sid-9", "local-a9")  # a new sign-in since
    second = receiver.receive(token)
    assert first.outcome == "processed" and second.outcome == "duplicate" and second.jti == first.jti
    assert sessions.local_sessions_for(transmitter.issuer, sub="alice") == {"local-a9"}
    assert [r.outcome for r in receiver.history] == ["processed", "duplicate"]


def test_failed_processing_releases_the_jti_so_the_retry_is_processed(transmitter, ssf_clock, sessions):
    """A storage failure while ending sessions answers 503; the transmitter's retry must then
    really end the session, not be taken for a duplicate."""
    calls = {"n": 0}
    ended: list[str] = []

    def flaky_end(local_id: str) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("session store down")
        ended.append(local_id)

    validator = build_validator(transmitter, ssf_clock, replay_cache=MemoryReplayCache(clock=ssf_clock))
    receiver = SSFReceiver(validator, sessions, flaky_end)
    token = make_set(transmitter.issuer, sub_id=session_subject("op-sid-1", transmitter.issuer))
    status, _, body = receiver.handle_push(token.encode(), "application/secevent+jwt", None)
    assert status == 503 and json.loads(body)["err"] == "temporarily_unavailable"
    status, _, _ = receiver.handle_push(token.encode(), "application/secevent+jwt", None)
    assert status == 202 and ended == ["local-a1"]


# -- the push handler ------------------------------------------------------------------------

CT = "application/secevent+jwt"


def test_push_of_a_valid_set_is_202_with_an_empty_body(receiver, sessions, transmitter):
    """RFC 8935 §2.3: success is 202 Accepted."""
    status, headers, body = receiver.handle_push(make_set(transmitter.issuer).encode(), CT, None)
    assert (status, body) == (202, b"") and ("Cache-Control", "no-store") in headers


def test_push_of_an_invalid_set_is_400_with_the_rfc8935_error_object(receiver, transmitter):
    """RFC 8935 §2.4: 400, Content-Type application/json, {"err", "description"}."""
    status, headers, body = receiver.handle_push(make_set("https://evil.example").encode(), CT, None)
    doc = json.loads(body)
    assert status == 400 and dict(headers)["Content-Type"] == "application/json"
    assert doc["err"] == "invalid_issuer" and "iss_mismatch" in doc["description"]
    assert "eyJ" not in doc["description"]  # never echoes the SET


def test_push_duplicate_is_202_again(receiver, transmitter):
    """RFC 8935 §4: duplicates are possible; acknowledging one is the documented behaviour."""
    token = make_set(transmitter.issuer).encode()
    assert receiver.handle_push(token, CT, None)[0] == 202
    assert receiver.handle_push(token, CT, None)[0] == 202
    assert [r.outcome for r in receiver.history] == ["processed", "duplicate"]


@pytest.mark.parametrize("content_type", [None, "application/jwt", "application/x-www-form-urlencoded"])
def test_push_with_the_wrong_content_type_is_400(receiver, transmitter, content_type):
    """RFC 8935 §2.1: the SET is sent as application/secevent+jwt."""
    status, _, body = receiver.handle_push(make_set(transmitter.issuer).encode(), content_type, None)
    assert status == 400 and json.loads(body)["err"] == "invalid_request"


def test_oversized_push_is_400_before_parsing(receiver):
    status, _, body = receiver.handle_push(b"x" * (17 * 1024), CT, None)
    assert status == 400 and "too_large" in json.loads(body)["description"]


def test_push_without_the_configured_authorization_is_401(receiver, transmitter):
    """SSF 1.0 §6.1.1: the transmitter MUST send the configured authorization_header."""
    receiver.push_authorization = "Bearer push-secret"
    status, headers, body = receiver.handle_push(make_set(transmitter.issuer).encode(), CT, None)
    assert status == 401 and json.loads(body)["err"] == "authentication_failed"
    assert dict(headers)["WWW-Authenticate"].startswith("Bearer")


def test_push_with_a_wrong_authorization_is_403_and_changes_nothing(receiver, sessions, transmitter):
    receiver.push_authorization = "Bearer push-secret"
    token = make_set(transmitter.issuer).encode()
    status, _, body = receiver.handle_push(token, CT, "Bearer guess")
    assert status == 403 and json.loads(body)["err"] == "access_denied"
    assert receiver.history == [] and sessions.local_sessions_for(transmitter.issuer, sid="op-sid-1")
    assert receiver.handle_push(token, CT, "Bearer push-secret")[0] == 202
