"""The shared capture server (oidc_logout.testing.CaptureServer) that tests and bench use as RPs."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from oidc_logout.testing import CaptureServer, Reply


def _token(sid: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"sid": sid, "jti": "j-" + sid}).encode())
    return "e30." + payload.decode().rstrip("=") + ".sig"


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    s = CaptureServer()
    yield s
    s.stop()


def test_records_the_request_and_answers_the_script_in_turn(server: CaptureServer) -> None:
    """Scripted replies come in order and the last repeats; every request is recorded."""
    url = server.url("/bc", Reply(500), Reply(204))
    statuses = [
        requests.post(url, data={"logout_token": _token("s1")}, timeout=5).status_code for _ in range(3)
    ]
    assert statuses == [500, 204, 204]
    hit = server.hits("/bc")[0]
    assert hit.method == "POST" and hit.header("content-type") == "application/x-www-form-urlencoded"
    assert hit.sid == "s1" and hit.jti == "j-s1" and server.count("/bc") == 3


def test_wait_for_returns_when_the_requests_arrive_and_false_on_timeout(server: CaptureServer) -> None:
    """wait_for blocks until n matching requests arrived; it gives up after its bound."""
    url = server.url("/late")
    threading.Thread(target=requests.get, args=(url,), kwargs={"timeout": 5}).start()
    assert server.wait_for(1, 5, path="/late")
    assert server.wait_for(2, 0.05, path="/late") is False


def test_once_overrides_the_next_matching_request_only(server: CaptureServer) -> None:
    """A one-shot reply applies to the first request it matches, then the script resumes."""
    url = server.url("/rp", Reply(200))
    server.once("/rp", Reply(409), where=lambda r: r.sid == "b")
    got = [
        requests.post(url, data={"logout_token": _token(s)}, timeout=5).status_code for s in ("a", "b", "b")
    ]
    assert got == [200, 409, 200]


def test_stop_refuses_connections_and_start_listens_on_the_same_port(server: CaptureServer) -> None:
    """After stop() a request fails to connect; start() serves again on the same port."""
    url = server.url("/x")
    with requests.Session() as http:  # a kept-alive connection must not outlive stop()
        assert http.get(url, timeout=5).status_code == 200
        server.stop()
        with pytest.raises(requests.ConnectionError):
            http.get(url, timeout=2)
        server.start()
        assert http.get(url, timeout=5).status_code == 200
    assert server.count("/x") == 2


def test_a_hanging_reply_is_released_by_stop(server: CaptureServer) -> None:
    """A hanging path never answers; stopping the server closes the held connection."""
    url = server.url("/hang", Reply(hang=True))
    errors: list[Exception] = []

    def call() -> None:
        try:
            requests.get(url, timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert server.wait_for(1, 5, path="/hang")
    server.stop()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    assert server.wait_for(1, 5, path="/hang", answered=True)


def test_a_request_whose_sender_dies_mid_body_is_not_recorded(server: CaptureServer) -> None:
    """Half a request (the sender killed mid-POST) is not a request an RP would act on; the
    next complete one is recorded as usual."""
    url = server.url("/bc")
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
        sock.sendall(
            b"POST /bc HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 400\r\n\r\nlogout_token=e30.eyJzaWQiOiJz"
        )
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # closed without an answer
    requests.post(url, data={"logout_token": _token("s2")}, timeout=5)
    assert [h.sid for h in server.hits("/bc")] == ["s2"]


def test_a_request_stops_counting_as_active_when_its_answer_starts(server: CaptureServer) -> None:
    """A client that has the status line of one answer sends its next request on another
    connection: the server counts one request active at most, never two (bounds tests read
    max_active as what the sender had in flight; counted until the last byte of the body,
    the next request could arrive first and the count read one too many)."""
    big = server.url("/big", Reply(200, stream_bytes=8 * 1024 * 1024))
    small = server.url("/small")
    host, port = urlsplit(big).hostname, urlsplit(big).port
    assert host is not None and port is not None
    with socket.create_connection((host, port), timeout=5) as first:
        first.sendall(f"POST /big HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())
        assert first.recv(12).startswith(b"HTTP/1.1 200")  # the answer started; 8 MiB unread
        assert requests.post(small, data={"x": "1"}, timeout=5).status_code == 200
        assert server.max_active == 1, server.max_active
