"""The framework-neutral back-channel handler (for Django, FastAPI, ...)."""

from __future__ import annotations

import json

import pytest

from oidc_logout.rp import (
    BackchannelLogoutReceiver,
    LogoutTokenValidator,
    MemorySessionIndex,
    StaticKeys,
    handle_backchannel_request,
)

from .tokens import CLIENT_ID, NOW, logout_token, public_jwks, rsa_key

ISS = "https://op.example"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def receiver() -> tuple[BackchannelLogoutReceiver, list[str]]:
    validator = LogoutTokenValidator(
        issuer=ISS, client_id=CLIENT_ID, keys=StaticKeys(public_jwks(rsa_key("k1"))), clock=lambda: NOW
    )
    index = MemorySessionIndex()
    index.register(ISS, "user-42", "op-session-1", "local-1")
    index.register(ISS, "user-42", "op-session-2", "local-2")
    ended: list[str] = []
    return BackchannelLogoutReceiver(validator, index, ended.append), ended


def test_valid_token_returns_200_no_store_and_ends_the_sid_session(receiver) -> None:  # type: ignore[no-untyped-def]
    rec, ended = receiver
    status, headers, body = handle_backchannel_request(
        f"logout_token={logout_token(ISS)}".encode(), FORM + "; charset=utf-8", rec
    )
    assert (status, body) == (200, b"")
    assert ("Cache-Control", "no-store") in headers
    assert ended == ["local-1"]


def test_receiver_reports_which_sessions_it_ended_for_a_sub_only_token(receiver) -> None:  # type: ignore[no-untyped-def]
    rec, ended = receiver
    result = rec.receive(logout_token(ISS, sid=None))
    assert result.ended == frozenset({"local-1", "local-2"}) and sorted(ended) == ["local-1", "local-2"]
    assert rec.sessions.local_sessions_for(ISS, sub="user-42") == set()


@pytest.mark.parametrize(
    ("body", "ctype", "reason"),
    [
        (b"logout_token=abc", "application/json", "bad_content_type"),
        (b"x=1", FORM, "token_missing"),
        (b"logout_token=a&logout_token=b", FORM, "token_missing"),
        (b"logout_token=" + b"a" * 20000, FORM, "too_large"),
        (b"logout_token=not.a.jwt", FORM, "malformed"),
    ],
)
def test_bad_requests_get_400_invalid_request(receiver, body: bytes, ctype: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    status, headers, raw = handle_backchannel_request(body, ctype, receiver[0])
    assert status == 400 and ("Cache-Control", "no-store") in headers
    data = json.loads(raw)
    assert data["error"] == "invalid_request" and data["error_description"].startswith(reason)


def test_failure_while_ending_sessions_is_a_500_not_a_400(receiver) -> None:  # type: ignore[no-untyped-def]
    rec, _ = receiver

    def broken(_: str) -> None:
        raise RuntimeError("store down")

    rec.end_local_session = broken
    status, _, raw = handle_backchannel_request(f"logout_token={logout_token(ISS)}", FORM, rec)
    assert status == 500 and json.loads(raw)["error"] == "server_error"
