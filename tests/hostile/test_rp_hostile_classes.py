"""Issue 12 item 14, property-based: the RP receiver (framework-neutral handler and the Flask
endpoint) given *correctly signed* logout tokens whose claims carry NaN/Infinity, huge
numbers, deep nesting, non-ASCII, quotes and control characters, and bodies of any size.
It answers 200 or 400 (never 5xx), always with Cache-Control: no-store, refuses every
unusable NumericDate, never reads more than the body limit, and ends no session by mistake."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oidc_logout.rp import (
    BackchannelLogoutReceiver,
    LogoutTokenError,
    LogoutTokenValidator,
    MemorySessionIndex,
    StaticKeys,
    handle_backchannel_request,
)
from oidc_logout.rp.receiver import MAX_BODY_BYTES
from tests.rp.conftest import FakeOP
from tests.rp.rp_app import create_app
from tests.rp.tokens import CLIENT_ID, NOW, claims, public_jwks, rsa_key, sign

from .strategies import body_size, deep_nesting, nasty_text, non_numeric_date

PROPS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
ISS = "https://op.example"
FORM = "application/x-www-form-urlencoded"


def signed_with_raw(issuer: str, now: float, raw: dict[str, str], **overrides: Any) -> str:
    """A real RS256 token (key k1, which the OP publishes) whose claims ``raw`` are spliced
    in as raw JSON text, so NaN, 1e999 or 3000 nested brackets reach the claim checks."""
    c = claims(issuer, now, **overrides)
    for name in raw:
        c.pop(name, None)
    text = json.dumps(c)[:-1]
    for name, value in raw.items():
        text += f", {json.dumps(name)}: {value}"
    return sign(text + "}", rsa_key("k1"))


def form(token: str) -> bytes:
    return urlencode({"logout_token": token}).encode()


class Neutral:
    def __init__(self) -> None:
        self.validator = LogoutTokenValidator(
            issuer=ISS, client_id=CLIENT_ID, keys=StaticKeys(public_jwks(rsa_key("k1"))), clock=lambda: NOW
        )
        self.index = MemorySessionIndex()
        self.index.register(ISS, "user-42", "op-session-1", "local-1")
        self.ended: list[str] = []
        self.receiver = BackchannelLogoutReceiver(self.validator, self.index, self.ended.append)

    def alive(self) -> bool:
        return self.ended == [] and self.index.local_sessions_for(ISS, sid="op-session-1") == {"local-1"}


@pytest.fixture(scope="module")
def neutral() -> Neutral:
    return Neutral()


def check(status: int, headers: Any, body: bytes, *, must_refuse: bool) -> None:
    assert status in ((400,) if must_refuse else (200, 400)), (status, body[:200])
    assert dict(headers).get("Cache-Control") == "no-store"
    if status == 400:
        data = json.loads(body)
        assert data["error"] == "invalid_request" and isinstance(data["error_description"], str)


# -- NaN / Infinity / huge / nested NumericDates: always refused ------------------------------


@PROPS
@given(claim=st.sampled_from(["exp", "iat"]), raw=non_numeric_date())
def test_unusable_numeric_dates_in_signed_tokens_are_refused(neutral: Neutral, claim: str, raw: str) -> None:
    token = signed_with_raw(ISS, NOW, {claim: raw}, sid="op-session-1")
    status, headers, body = handle_backchannel_request(form(token), FORM, neutral.receiver)
    check(status, headers, body, must_refuse=True)
    assert neutral.alive()
    with pytest.raises(LogoutTokenError):
        neutral.validator.validate(token)


# -- deep nesting anywhere in a signed payload: never a 5xx ---------------------------------


@PROPS
@given(nested=deep_nesting(), where=st.sampled_from(["extra", "events", "aud", "sid"]))
def test_deeply_nested_claims_in_signed_tokens_never_raise(neutral: Neutral, nested: str, where: str) -> None:
    token = signed_with_raw(ISS, NOW, {where: nested}, sid="other-session")
    status, headers, body = handle_backchannel_request(form(token), FORM, neutral.receiver)
    check(status, headers, body, must_refuse=where != "extra")
    assert neutral.alive()


# -- non-ASCII, quotes and control characters: in claims, headers and the form ---------------


@PROPS
@given(text=nasty_text, where=st.sampled_from(["sid", "jti", "iss", "aud", "kid", "typ", "form", "ctype"]))
def test_non_ascii_quotes_and_control_characters_never_raise(neutral: Neutral, text: str, where: str) -> None:
    ctype = FORM
    if where in ("kid", "typ"):
        token = sign(json.dumps(claims(ISS, NOW, sid="other-session")), rsa_key("k1"), **{where: text})
        body = form(token)
    elif where == "form":
        body = urlencode([("logout_token", text), (text, text)], errors="surrogatepass").encode("utf-8")
    elif where == "ctype":
        body, ctype = form(sign(json.dumps(claims(ISS, NOW, sid="other-session")), rsa_key("k1"))), text
    else:
        overrides: dict[str, Any] = {where: text}
        if where != "sid":
            overrides["sid"] = "other-session"
        body = form(sign(json.dumps(claims(ISS, NOW, **overrides)), rsa_key("k1")))
    status, headers, raw = handle_backchannel_request(body, ctype, neutral.receiver)
    check(
        status,
        headers,
        raw,
        must_refuse=where in ("iss", "aud", "form", "kid", "ctype") and text not in (ISS, CLIENT_ID, FORM),
    )
    assert neutral.alive()
    if status == 400:  # the reply never echoes the hostile text
        assert len(text) < 4 or text not in json.loads(raw)["error_description"]


# -- huge bodies: read at most limit + 1 bytes --------------------------------------------


class CountingStream(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.read_bytes if n is None or n < 0 else min(n, self.size - self.read_bytes)
        self.read_bytes += n
        return b"a" * n


@PROPS
@given(
    size=body_size(MAX_BODY_BYTES), declared=st.sampled_from(["true", "absent", "smaller", "larger", "junk"])
)
def test_huge_bodies_are_refused_without_reading_them(neutral: Neutral, size: int, declared: str) -> None:
    stream = CountingStream(size)
    length: Any = {
        "true": size,
        "absent": None,
        "smaller": max(0, size - 100),
        "larger": size + 10**9,
        "junk": "12abc",
    }[declared]
    status, headers, body = handle_backchannel_request(stream, FORM, neutral.receiver, content_length=length)
    check(status, headers, body, must_refuse=True)
    assert stream.read_bytes <= MAX_BODY_BYTES + 1
    if declared in ("true", "absent") and size > MAX_BODY_BYTES:
        assert json.loads(body)["error_description"].startswith("too_large")
    assert neutral.alive()


# -- the same classes through the Flask endpoint ----------------------------------------


class FlaskRP:
    def __init__(self) -> None:
        self.op = FakeOP()
        self.app, self.ext = create_app(self.op.issuer)
        self.client = self.app.test_client()
        assert (
            self.client.get("/callback", query_string={"sub": "user-42", "sid": "op-session-1"}).status_code
            == 200
        )

    def logged_in(self) -> bool:
        return self.client.get("/protected").status_code == 200


@pytest.fixture(scope="module")
def flask_rp() -> Iterator[FlaskRP]:
    rp = FlaskRP()
    yield rp
    rp.op.stop()


@PROPS
@given(data=st.data())
def test_flask_endpoint_refuses_the_same_classes_with_no_store(flask_rp: FlaskRP, data: Any) -> None:
    issuer, now = flask_rp.op.issuer, time.time()
    kind = data.draw(st.sampled_from(["date", "nested", "text", "huge", "method"]))
    if kind == "method":
        method = data.draw(st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]))
        resp = flask_rp.client.open("/oidc/backchannel-logout", method=method)
        assert resp.status_code == 405 and resp.headers["Cache-Control"] == "no-store"
        assert flask_rp.logged_in()
        return
    if kind == "date":
        raw = {data.draw(st.sampled_from(["exp", "iat"])): data.draw(non_numeric_date())}
        body, refuse = form(signed_with_raw(issuer, now, raw, sid="op-session-1")), True
    elif kind == "nested":
        body, refuse = form(signed_with_raw(issuer, now, {"sid": data.draw(deep_nesting())})), True
    elif kind == "text":
        token = sign(json.dumps(claims(issuer, now, sid=data.draw(nasty_text))), rsa_key("k1"))
        body, refuse = form(token), False
    else:
        size = data.draw(body_size(MAX_BODY_BYTES))
        body, refuse = b"logout_token=" + b"a" * size, True
    resp = flask_rp.client.post("/oidc/backchannel-logout", data=body, content_type=FORM)
    check(resp.status_code, resp.headers, resp.data, must_refuse=refuse)
    assert flask_rp.logged_in()
