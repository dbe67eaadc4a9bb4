"""The SSRF guard: which addresses the OP may POST logout tokens to.

Only IP literals are judged here (no traffic ever leaves loopback); the check must refuse
before any connection is attempted.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from oidc_logout import _http
from oidc_logout._http import DisallowedAddress, check_uri_address
from oidc_logout.backchannel.request import FAILED, RETRY, post_logout_token
from oidc_logout.poster import Poster

from .conftest import RPServer

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://10.0.0.1/logout",
    "http://172.16.5.4/logout",
    "http://192.168.1.1/logout",
    "http://127.0.0.1:8080/logout",
    "http://[::1]/logout",
    "http://[fe80::1]/logout",
    "http://[fc00::1]/logout",
    "http://0.0.0.0/logout",
    "http://224.0.0.1/logout",
    "http://240.0.0.1/logout",  # reserved
    "http://100.64.0.1/logout",  # shared (CGNAT) space
    "http://[::ffff:169.254.169.254]/logout",  # IPv4-mapped metadata address
    "http://[::ffff:10.0.0.1]/logout",
]


@pytest.mark.parametrize("uri", REFUSED)
def test_non_public_addresses_are_refused_without_dev_mode(uri: str) -> None:
    with pytest.raises(DisallowedAddress):
        check_uri_address(uri, dev_mode=False, allowlist=())


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9/x", "http://[::1]/x"])
def test_dev_mode_admits_loopback_only(uri: str) -> None:
    check_uri_address(uri, dev_mode=True, allowlist=())


@pytest.mark.parametrize("uri", ["http://169.254.169.254/", "http://10.0.0.1/", "http://[fe80::1]/"])
def test_dev_mode_still_refuses_metadata_and_private(uri: str) -> None:
    with pytest.raises(DisallowedAddress):
        check_uri_address(uri, dev_mode=True, allowlist=())


def test_allowlisted_cidr_admits_an_internal_rp() -> None:
    check_uri_address("https://10.1.2.3/logout", dev_mode=False, allowlist=("10.1.0.0/16",))
    check_uri_address("https://[fd00::5]/logout", dev_mode=False, allowlist=("fd00::/8",))
    with pytest.raises(DisallowedAddress):
        check_uri_address("https://10.2.0.1/logout", dev_mode=False, allowlist=("10.1.0.0/16",))


def test_public_literal_is_allowed_without_traffic() -> None:
    check_uri_address("https://93.184.216.34/logout", dev_mode=False)
    check_uri_address("https://[2606:4700::1111]/logout", dev_mode=False)


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "gopher://1.1.1.1/", "https:///nohost"])
def test_non_http_uris_are_refused(uri: str) -> None:
    with pytest.raises(DisallowedAddress):
        check_uri_address(uri, dev_mode=True)


def test_hostname_resolving_to_loopback_is_refused_without_dev_mode() -> None:
    with pytest.raises(DisallowedAddress):
        check_uri_address("http://localhost/logout", dev_mode=False)


def test_delivery_to_a_refused_address_fails_before_connecting(rp: RPServer) -> None:
    """The pinned connection re-checks at connect time: no request reaches the receiver."""
    http = Poster(dev_mode=False)
    try:
        res = post_logout_token(
            http,
            rp.url("/guarded"),
            "tok",
            jti="j",
            connect_timeout=1,
            read_timeout=1,
            max_bytes=1024,
            retry_after_cap=10,
        )
    finally:
        http.close()
    assert res.outcome == FAILED and res.http_status is None
    assert res.error and "not allowed" in res.error
    assert rp.hits("/guarded") == []


def test_dns_rebinding_between_check_and_connect_is_refused(
    rp: RPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that resolved to an admitted address at registration but to a forbidden one at
    delivery time is refused: the connection checks the address it actually connects to."""
    answers = iter(["127.0.0.1", "10.0.0.1"])

    def rebinding(host: str, port: int) -> list[tuple]:
        ip = next(answers, "10.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(_http, "_resolve", rebinding)
    uri = f"http://rp.rebind.test:{rp.port}/rebind"
    rp.url("/rebind")
    check_uri_address(uri, dev_mode=True)  # registration: resolves to loopback, admitted
    http = Poster(dev_mode=True)
    try:
        res = post_logout_token(
            http, uri, "tok", jti="j", connect_timeout=1, read_timeout=1, max_bytes=1024, retry_after_cap=10
        )
    finally:
        http.close()
    assert res.outcome == FAILED and "10.0.0.1" in (res.error or "")
    assert rp.hits("/rebind") == []


def test_pinned_connection_keeps_the_host_header(rp: RPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        _http,
        "_resolve",
        lambda host, port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))],
    )
    rp.url("/named")
    http = Poster(dev_mode=True)
    try:
        res = post_logout_token(
            http,
            f"http://rp.named.test:{rp.port}/named",
            "tok",
            jti="j",
            connect_timeout=1,
            read_timeout=1,
            max_bytes=1024,
            retry_after_cap=10,
        )
    finally:
        http.close()
    assert res.outcome == "delivered"
    assert rp.hits("/named")[0].headers["Host"] == f"rp.named.test:{rp.port}"


def test_proxy_environment_is_ignored(rp: RPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("http_proxy", "http://10.0.0.1:3128")
    http = Poster(dev_mode=True)
    try:
        res = post_logout_token(
            http,
            rp.url("/direct"),
            "tok",
            jti="j",
            connect_timeout=1,
            read_timeout=1,
            max_bytes=1024,
            retry_after_cap=10,
        )
    finally:
        http.close()
    assert res.outcome == "delivered" and len(rp.hits("/direct")) == 1


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch):
    """A resolver that does not answer until the test ends (getaddrinfo on a dead DNS server)."""
    release = threading.Event()
    calls: list[str] = []

    def hang(host: str, port: int) -> list[tuple]:
        calls.append(host)
        release.wait(60)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(_http, "_resolve", hang)
    yield calls
    release.set()


def test_a_hanging_name_lookup_ends_the_attempt_at_the_connect_timeout(
    rp: RPServer, hanging_resolver: list[str]
) -> None:
    """The attempt is a retry (timeout) after the connect timeout, not after the resolver's
    own timeouts: a slot is not held by a DNS server that does not answer."""
    rp.url("/slow-dns")
    http = Poster(dev_mode=True)
    t0 = time.monotonic()
    try:
        res = post_logout_token(
            http,
            f"http://rp.slow-dns.test:{rp.port}/slow-dns",
            "tok",
            jti="j",
            connect_timeout=0.3,
            read_timeout=1,
            max_bytes=1024,
            retry_after_cap=10,
        )
    finally:
        http.close()
    assert hanging_resolver == ["rp.slow-dns.test"]
    assert res.outcome == RETRY and res.error == "timeout (NameResolutionTimeout)"
    assert time.monotonic() - t0 < 30  # the resolver answers only after 60 s
    assert rp.hits("/slow-dns") == []


def test_registration_refuses_a_name_that_does_not_resolve_in_time(hanging_resolver: list[str]) -> None:
    with pytest.raises(DisallowedAddress, match=r"did not resolve within 0\.2 s"):
        check_uri_address("https://rp.slow-dns.test/logout", dev_mode=False, timeout=0.2)
    assert hanging_resolver == ["rp.slow-dns.test"]
