"""Property-based hostile input against the RP side: the framework-neutral
``handle_backchannel_request`` and the Flask ``RPLogout`` endpoint (served over a real
loopback server, keys fetched from a real loopback OP). Garbage bodies, content types and
JWTs (alg none, HS256 keyed with the OP's public key, huge or deeply nested headers, bad
base64, wrong claim types, duplicate keys) always give the 400 JSON ``invalid_request``,
never a 5xx, and never end a session."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oidc_logout.rp import (
    BackchannelLogoutReceiver,
    LogoutTokenValidator,
    MemorySessionIndex,
    StaticKeys,
    handle_backchannel_request,
)
from tests.rp.conftest import FakeOP
from tests.rp.rp_app import create_app
from tests.rp.tokens import CLIENT_ID, NOW, claims, logout_token, public_jwks, rsa_key

from .strategies import any_text, content_types, forgeries, garbage_jwt

PROPS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
ISS = "https://op.example"
FORM = "application/x-www-form-urlencoded"


class Neutral:
    def __init__(self) -> None:
        self.validator = LogoutTokenValidator(
            issuer=ISS, client_id=CLIENT_ID, keys=StaticKeys(public_jwks(rsa_key("k1"))), clock=lambda: NOW
        )
        self.index = MemorySessionIndex()
        self.index.register(ISS, "user-42", "op-session-1", "local-1")
        self.ended: list[str] = []
        self.receiver = BackchannelLogoutReceiver(self.validator, self.index, self.ended.append)


@pytest.fixture(scope="module")
def neutral() -> Neutral:
    return Neutral()


def _public_material() -> tuple[bytes, bytes]:
    key = rsa_key("k1")
    return key.export_to_pem(), json.dumps(key.export_public(as_dict=True)).encode()


@st.composite
def hostile_body(draw: Any, issuer: str, now: float) -> tuple[bytes, str | None]:
    base = claims(issuer, now)
    shape = draw(st.integers(0, 4))
    if shape == 0:
        token = draw(garbage_jwt(base))
        body = urlencode({"logout_token": token}).encode()
    elif shape == 1:
        body = draw(st.binary(max_size=600))
    elif shape == 2:
        fields = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["logout_token", "x", ""]) | any_text, any_text | garbage_jwt(base)
                ),
                max_size=5,
            )
        )
        body = urlencode(fields, encoding="utf-8", errors="surrogatepass").encode()
    elif shape == 3:
        pem, jwk_json = _public_material()
        token = draw(st.sampled_from(forgeries(base, pem, jwk_json, "k1")))
        body = urlencode({"logout_token": token}).encode()
    else:  # duplicated parameter, one of them genuinely valid
        good = logout_token(issuer, now=now)
        body = urlencode([("logout_token", good), ("logout_token", draw(garbage_jwt(base)))]).encode()
    ctype = draw(st.one_of(st.just(FORM), content_types()))
    return body, ctype


def assert_400_json(status: int, headers: Any, body: bytes) -> None:
    assert status == 400, (status, body[:200])
    data = json.loads(body)
    assert data["error"] == "invalid_request" and isinstance(data["error_description"], str)
    assert dict(headers).get("Cache-Control") == "no-store"


@PROPS
@given(req=hostile_body(ISS, NOW))
def test_neutral_handler_answers_400_json_to_anything_hostile(
    neutral: Neutral, req: tuple[bytes, str | None]
) -> None:
    body, ctype = req
    status, headers, raw = handle_backchannel_request(body, ctype, neutral.receiver)
    assert_400_json(status, headers, raw)
    assert neutral.ended == []
    assert neutral.index.local_sessions_for(ISS, sid="op-session-1") == {"local-1"}


class FlaskRP:
    def __init__(self) -> None:
        self.op = FakeOP()  # real loopback OP: discovery + JWKS with key k1
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
def test_flask_rplogout_endpoint_answers_400_json_and_keeps_the_session(flask_rp: FlaskRP, data: Any) -> None:
    body, ctype = data.draw(hostile_body(flask_rp.op.issuer, time.time()))
    kwargs: dict[str, Any] = {"data": body}
    if ctype is not None:
        kwargs["content_type"] = ctype
    resp = flask_rp.client.post("/oidc/backchannel-logout", **kwargs)
    if resp.status_code == 413:  # Flask's own request size limit, also a JSON-ish refusal
        return
    assert_400_json(resp.status_code, resp.headers, resp.data)
    assert flask_rp.logged_in()


def test_flask_rplogout_real_http_smoke(flask_rp: FlaskRP) -> None:
    """A few hostile posts over a real loopback HTTP server, then one valid token works."""
    from tests.rp.conftest import ServerThread

    server = ServerThread(flask_rp.app)
    try:
        url = server.url + "/oidc/backchannel-logout"
        pem, jwk_json = _public_material()
        base = claims(flask_rp.op.issuer, time.time())
        for tok in [
            *forgeries(base, pem, jwk_json, "k1"),
            "eyJhbGciOiJSUzI1NiIsImNyaXQiOjV9.e30.AAAA",  # {"alg":"RS256","crit":5}
            "W1tbW1tbW1tbW1tbW1tbW1tbW1tb" * 300 + ".e30.AAAA",
        ]:  # nested arrays
            resp = requests.post(url, data={"logout_token": tok}, timeout=10)
            assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
        resp = requests.post(url, data=b"\xff\xfe" * 50, timeout=10, headers={"Content-Type": FORM})
        assert resp.status_code == 400
        assert flask_rp.logged_in()
        good = logout_token(flask_rp.op.issuer, now=time.time(), sid="op-session-1")
        assert requests.post(url, data={"logout_token": good}, timeout=10).status_code == 200
        assert not flask_rp.logged_in()
    finally:
        server.stop()
