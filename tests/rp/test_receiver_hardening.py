"""Issue 12 items 10, 11, 13 and 14 through the Flask receiver, over real loopback HTTP
(werkzeug server for the RP, a real OP for discovery and JWKS)."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from oidc_logout.rp import MemorySessionIndex, MemorySessionStore
from oidc_logout.rp.receiver import MAX_BODY_BYTES
from tests.support.servers import read_http_message

from .conftest import FakeOP, ServerThread
from .rp_app import create_app
from .tokens import claims, ec_key, logout_token, rsa_key, sign

BC = "/oidc/backchannel-logout"
FC = "/oidc/frontchannel-logout"


class CountingInput:
    """Wraps wsgi.input and counts the bytes the application actually read."""

    def __init__(self, inner: Any, sink: list[int]) -> None:
        self.inner = inner
        self.sink = sink

    def read(self, *args: Any) -> bytes:
        data = self.inner.read(*args)
        self.sink[0] += len(data)
        return bytes(data)

    def readline(self, *args: Any) -> bytes:
        data = self.inner.readline(*args)
        self.sink[0] += len(data)
        return bytes(data)

    def __iter__(self) -> Any:
        return iter(self.read, b"")


class RP:
    def __init__(self, op: FakeOP, **rp_options: Any) -> None:
        self.store = MemorySessionStore()
        self.index = MemorySessionIndex()
        self.app, self.ext = create_app(op.issuer, index=self.index, store=self.store, **rp_options)
        self.bytes_read = [0]
        inner_app = self.app.wsgi_app

        def counting(environ: Any, start_response: Any) -> Any:
            environ["wsgi.input"] = CountingInput(environ["wsgi.input"], self.bytes_read)
            return inner_app(environ, start_response)

        self.app.wsgi_app = counting  # type: ignore[method-assign]
        self.server = ServerThread(self.app)
        self.url = self.server.url

    def browser(self, sub: str = "alice", sid: str = "op-sid-1") -> requests.Session:
        b = requests.Session()
        assert b.get(self.url + "/callback", params={"sub": sub, "sid": sid}, timeout=5).status_code == 200
        assert self.logged_in(b)
        return b

    def logged_in(self, browser: requests.Session) -> bool:
        return browser.get(self.url + "/protected", allow_redirects=False, timeout=5).status_code == 200


@pytest.fixture
def rp(op: FakeOP) -> Iterator[RP]:
    server = RP(op)
    yield server
    server.server.stop()


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` bytes and read one response (head and Content-Length body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        message = read_http_message(sock)
        return b"" if message is None else message[0] + b"\r\n\r\n" + message[1]


def assert_400_no_store(resp: requests.Response, reason: str | None = None) -> None:
    assert resp.status_code == 400, resp.text[:200]
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.json()["error"] == "invalid_request"
    if reason:
        assert resp.json()["error_description"].startswith(reason), resp.text


# -- item 10 --------------------------------------------------------------------------------


def test_es256_token_with_a_published_p256_key_is_refused_for_an_rs256_client(op: FakeOP, rp: RP) -> None:
    """Back-Channel §2.6 step 3 → Core §3.1.3.7: the OP publishes an RSA and a P-256 key; the
    client registered no alg (RS256), so an ES256 token gets 400 and ends nothing."""
    op.keys = [rsa_key("k1"), ec_key("e1")]
    browser = rp.browser(sid="op-sid-1")
    token = logout_token(op.issuer, ec_key("e1"), alg="ES256", now=time.time(), sid="op-sid-1")
    resp = requests.post(rp.url + BC, data={"logout_token": token}, timeout=5)
    assert_400_no_store(resp, "alg_not_allowed")
    assert rp.logged_in(browser)
    good = logout_token(op.issuer, now=time.time(), sid="op-sid-1")
    assert requests.post(rp.url + BC, data={"logout_token": good}, timeout=5).status_code == 200
    assert not rp.logged_in(browser)


# -- item 11 --------------------------------------------------------------------------------


def test_a_declared_500_mb_body_is_refused_before_reading_it(rp: RP) -> None:
    """Content-Length: 500 MB, nothing sent: the 400 comes at once (the old code blocked
    reading the body, and with the body sent, held all of it in memory)."""
    head = (
        f"POST {BC} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {500 * 1024 * 1024}\r\n\r\n"
    ).encode()
    try:
        reply = raw_http(rp.server.port, head, timeout=5)
    except TimeoutError:
        pytest.fail("the receiver waited for a 500 MB body instead of refusing it")
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"cache-control: no-store" in reply.lower()
    assert b"too_large" in reply
    assert rp.bytes_read[0] == 0


def test_an_undeclared_chunked_body_is_read_only_up_to_the_limit(rp: RP) -> None:
    """Chunked upload (no Content-Length) of 4 MiB: at most limit+1 bytes are read."""
    chunk = b"logout_token=" + b"a" * (64 * 1024 - 13)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64)) + b"0\r\n\r\n"
    head = (
        f"POST {BC} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    try:
        reply = raw_http(rp.server.port, head + body, timeout=10)
    except OSError:
        reply = b""  # the server may close the connection on the unread rest: that's fine
    if reply:
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert 0 < rp.bytes_read[0] <= MAX_BODY_BYTES + 1 + 64 * 1024, rp.bytes_read[0]


def test_a_body_just_over_the_limit_is_refused_and_one_under_works(op: FakeOP, rp: RP) -> None:
    browser = rp.browser(sid="op-sid-1")
    token = logout_token(op.issuer, now=time.time(), sid="op-sid-1")
    over = f"logout_token={token}&pad=".encode()
    over += b"x" * (MAX_BODY_BYTES + 1 - len(over))
    resp = requests.post(
        rp.url + BC, data=over, timeout=5, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_400_no_store(resp, "too_large")
    assert rp.logged_in(browser)
    under = over[:MAX_BODY_BYTES]
    resp = requests.post(
        rp.url + BC, data=under, timeout=5, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 200 and not rp.logged_in(browser)


# -- item 13 --------------------------------------------------------------------------------


def test_frontchannel_route_is_not_mounted_unless_configured(op: FakeOP, rp: RP) -> None:
    """An RP not registered for front-channel logout has no such route (404), so no
    cross-site GET can log its users out."""
    browser = rp.browser(sid="op-sid-1")
    assert browser.get(rp.url + FC, timeout=5).status_code == 404
    assert (
        requests.get(rp.url + FC, params={"iss": op.issuer, "sid": "op-sid-1"}, timeout=5).status_code == 404
    )
    assert rp.logged_in(browser)


@pytest.mark.parametrize("params", [{}, {"sid": "op-sid-1"}, {"iss": "ISS"}])
def test_bare_or_partial_frontchannel_get_ends_nothing_when_session_required(
    op: FakeOP, params: dict[str, str]
) -> None:
    """Front-Channel Logout §2 (frontchannel_logout_session_required): iss and sid are required;
    a cross-site GET carrying the victim's cookie but no iss/sid is refused with 400."""
    rp = RP(op, frontchannel=True)
    try:
        browser = rp.browser(sid="op-sid-1")
        params = {k: (op.issuer if v == "ISS" else v) for k, v in params.items()}
        resp = browser.get(
            rp.url + FC,
            params=params,
            timeout=5,
            headers={"Sec-Fetch-Site": "cross-site", "Referer": "https://evil.example/"},
        )
        assert resp.status_code == 400
        assert "no-store" in resp.headers["Cache-Control"]
        assert rp.logged_in(browser)
        ok = requests.get(rp.url + FC, params={"iss": op.issuer, "sid": "op-sid-1"}, timeout=5)
        assert ok.status_code == 200 and not rp.logged_in(browser)
    finally:
        rp.server.stop()


# -- item 14 --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND"])
def test_wrong_method_on_the_backchannel_endpoint_is_405_with_no_store(rp: RP, method: str) -> None:
    """§2.8: the endpoint's responses carry Cache-Control: no-store, a 405 included."""
    resp = requests.request(method, rp.url + BC, timeout=5)
    assert resp.status_code == 405
    assert resp.headers["Cache-Control"] == "no-store"
    assert "POST" in resp.headers.get("Allow", "")


def test_wrong_method_on_the_frontchannel_endpoint_is_405_and_ends_nothing(op: FakeOP) -> None:
    rp = RP(op, frontchannel=True)
    try:
        browser = rp.browser(sid="op-sid-1")
        for method in ("POST", "HEAD", "PUT"):
            resp = browser.request(
                method, rp.url + FC, params={"iss": op.issuer, "sid": "op-sid-1"}, timeout=5
            )
            assert resp.status_code == 405 and "no-store" in resp.headers["Cache-Control"]
        assert rp.logged_in(browser)
    finally:
        rp.server.stop()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_deeply_nested_header_gets_400_not_500(op: FakeOP, rp: RP) -> None:
    browser = rp.browser(sid="op-sid-1")
    header = '{"alg":"RS256","x":' + "[" * 2000 + "]" * 2000 + "}"
    token = f"{_b64(header.encode())}.{_b64(json.dumps(claims(op.issuer, time.time())).encode())}.AAAA"
    resp = requests.post(rp.url + BC, data={"logout_token": token}, timeout=5)
    assert_400_no_store(resp, "malformed")
    assert rp.logged_in(browser)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "1e999"])
def test_signed_token_with_non_finite_exp_gets_400_and_ends_nothing(op: FakeOP, rp: RP, raw: str) -> None:
    """A NaN exp never compared as expired: the old code answered 200 and ended the session."""
    browser = rp.browser(sid="op-sid-1")
    c = claims(op.issuer, time.time(), sid="op-sid-1")
    text = json.dumps(c).replace(f'"exp": {c["exp"]}', f'"exp": {raw}')
    resp = requests.post(rp.url + BC, data={"logout_token": sign(text, rsa_key("k1"))}, timeout=5)
    assert_400_no_store(resp)
    assert rp.logged_in(browser)
