"""The delivery transport (oidc_logout.poster) against real loopback peers speaking raw
HTTP/1.1 byte for byte: kept-alive connections, answers framed every way HTTP/1.1 allows,
peers that close, hang or answer what is not HTTP, TLS, and concurrent senders."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oidc_logout.backchannel.request import FAILED, RETRY, AttemptResult, post_logout_token
from oidc_logout.poster import Poster, PostFailed, PostTimeout, Reply
from tests.support.servers import read_http_message

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

#: One connection's handler: gets the socket and the count of requests read so far.
Handler = Callable[[socket.socket, "RawPeer"], None]


class RawPeer:
    """A loopback TCP server running ``handler`` per accepted connection, counting the
    connections and the requests (request heads read with :meth:`read_request`)."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/bc", scheme: str = "http") -> str:
        host = "localhost" if scheme == "https" else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes | None:
        """One request (head and Content-Length body), or None at EOF."""
        message = read_http_message(conn)
        if message is None:
            return None
        head, body = message
        with self.lock:
            self.requests.append(head + b"\r\n\r\n" + body)
        return head

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[list[RawPeer]]:
    made: list[RawPeer] = []
    yield made
    for p in made:
        p.close()


@pytest.fixture
def poster() -> Iterator[Poster]:
    p = Poster(dev_mode=True, max_idle_per_origin=4)
    yield p
    p.close()


def peer(peers: list[RawPeer], handler: Handler, tls: ssl.SSLContext | None = None) -> RawPeer:
    p = RawPeer(handler, tls)
    peers.append(p)
    return p


def keep_alive(answer: bytes) -> Handler:
    def handler(conn: socket.socket, p: RawPeer) -> None:
        while p.read_request(conn) is not None:
            conn.sendall(answer)

    return handler


def deliver(poster: Poster, url: str) -> AttemptResult:
    """One back-channel logout attempt through ``poster``, classified (§2.8)."""
    return post_logout_token(
        poster, url, "a.b.c", jti="j", connect_timeout=2, read_timeout=2, max_bytes=4096, retry_after_cap=60
    )


def send(poster: Poster, url: str, *, read_timeout: float = 2.0, max_bytes: int = 4096) -> Reply:
    return poster.post_form(
        url,
        {"logout_token": "a.b.c"},
        headers={"Accept": "application/json"},
        connect_timeout=2.0,
        read_timeout=read_timeout,
        max_bytes=max_bytes,
    )


# -- kept-alive connections ------------------------------------------------------------------


def test_posts_to_one_rp_reuse_one_connection(poster: Poster, peers: list[RawPeer]) -> None:
    p = peer(peers, keep_alive(OK))
    for _ in range(5):
        assert send(poster, p.url()).status == 200
    assert (p.connections, len(p.requests)) == (1, 5)
    head = p.requests[0].split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST /bc HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{p.port}" in head.lower()
    assert "content-type: application/x-www-form-urlencoded" in head.lower()
    assert p.requests[0].endswith(b"\r\n\r\nlogout_token=a.b.c")


def test_a_connection_the_rp_closed_while_idle_is_replaced_not_failed(
    poster: Poster, peers: list[RawPeer]
) -> None:
    """An RP that closes every connection after one answer (without saying so): the next
    POST notices the closed idle connection before using it and opens a new one."""

    def one_answer(conn: socket.socket, p: RawPeer) -> None:
        if p.read_request(conn) is not None:
            conn.sendall(OK)

    p = peer(peers, one_answer)
    for _ in range(3):
        assert send(poster, p.url()).status == 200
        time.sleep(0.05)  # the close reaches this side before the next POST
    assert (p.connections, len(p.requests)) == (3, 3)


def test_connection_close_in_the_answer_is_honoured(poster: Poster, peers: list[RawPeer]) -> None:
    p = peer(peers, keep_alive(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
    assert send(poster, p.url()).status == 200
    assert send(poster, p.url()).status == 200
    assert p.connections == 2


# -- answers framed every way --------------------------------------------------------------------


def test_a_chunked_error_answer_is_read_and_the_connection_kept(poster: Poster, peers: list[RawPeer]) -> None:
    body = b'{"error":"invalid_request","error_description":"bad sid"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    p = peer(
        peers,
        keep_alive(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
            + chunked
        ),
    )
    res = deliver(poster, p.url())
    assert (res.outcome, res.http_status) == (FAILED, 400)
    assert res.error == "HTTP 400 invalid_request: bad sid"
    reply = send(poster, p.url())
    assert reply.body == body and not reply.truncated
    assert p.connections == 1


def test_a_body_delimited_by_close_is_read_to_the_end(poster: Poster, peers: list[RawPeer]) -> None:
    def close_delimited(conn: socket.socket, p: RawPeer) -> None:
        p.read_request(conn)
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n\r\nbusy, come back")
        conn.shutdown(socket.SHUT_WR)

    p = peer(peers, close_delimited)
    res = deliver(poster, p.url())
    assert (res.outcome, res.http_status, res.retry_after) == (RETRY, 503, 7.0)
    assert res.error == "HTTP 503 busy, come back"


def test_an_interim_100_continue_is_skipped(poster: Poster, peers: list[RawPeer]) -> None:
    p = peer(peers, keep_alive(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
    assert send(poster, p.url()).status == 204
    assert send(poster, p.url()).status == 204
    assert p.connections == 1


def test_a_chunked_body_past_the_cap_is_cut_and_the_connection_closed(
    poster: Poster, peers: list[RawPeer]
) -> None:
    def endless(conn: socket.socket, p: RawPeer) -> None:
        p.read_request(conn)
        conn.sendall(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(1000):
            conn.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")

    p = peer(peers, endless)
    reply = send(poster, p.url(), max_bytes=10_000)
    assert reply.status == 500 and reply.truncated and len(reply.body) == 10_000
    assert send(poster, p.url(), max_bytes=10_000).truncated
    assert p.connections == 2  # the cut connection was not reused


def test_a_body_still_arriving_at_the_deadline_is_cut(poster: Poster, peers: list[RawPeer]) -> None:
    def trickle(conn: socket.socket, p: RawPeer) -> None:
        p.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.1)

    p = peer(peers, trickle)
    t0 = time.monotonic()
    reply = poster.post_form(
        p.url(), {"logout_token": "t"}, headers={}, connect_timeout=0.3, read_timeout=0.5, max_bytes=4096
    )
    assert reply.status == 200 and reply.truncated and len(reply.body) < 100
    assert time.monotonic() - t0 < 5.0  # the 0.5 s read deadline, not the 10 s trickle


# -- peers that do not answer ----------------------------------------------------------------


def test_an_rp_closing_without_an_answer_is_a_retry_and_the_post_is_sent_once(
    poster: Poster, peers: list[RawPeer]
) -> None:
    def hang_up(conn: socket.socket, p: RawPeer) -> None:
        p.read_request(conn)

    p = peer(peers, hang_up)
    res = deliver(poster, p.url())
    assert (res.outcome, res.http_status) == (RETRY, None)
    assert res.error == "network error (ConnectionError: RemoteDisconnected)"
    time.sleep(0.1)
    assert len(p.requests) == 1  # never re-sent: the RP may have acted on it


def test_an_answer_that_is_not_http_is_a_retry(poster: Poster, peers: list[RawPeer]) -> None:
    p = peer(peers, keep_alive(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    with pytest.raises(PostFailed) as err:
        send(poster, p.url())
    assert err.value.cause == "ProtocolError"


def test_an_rp_that_never_answers_times_out(poster: Poster, peers: list[RawPeer]) -> None:
    release = threading.Event()

    def silent(conn: socket.socket, p: RawPeer) -> None:
        p.read_request(conn)
        release.wait(5)

    p = peer(peers, silent)
    t0 = time.monotonic()
    with pytest.raises(PostTimeout) as err:
        send(poster, p.url(), read_timeout=0.3)
    release.set()
    assert err.value.kind == "ReadTimeout" and time.monotonic() - t0 < 4.0  # the peer holds 5 s


def test_a_refused_connection_is_a_connect_failure(poster: Poster) -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(PostFailed) as err:
        send(poster, f"http://127.0.0.1:{port}/bc")
    assert err.value.cause == "ConnectionRefusedError"


# -- TLS -------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, cert_file


def test_tls_rp_with_a_trusted_certificate_is_reached_and_kept_alive(
    tmp_path: Path, peers: list[RawPeer]
) -> None:
    server, cert_file = _self_signed(tmp_path)
    p = peer(peers, keep_alive(OK), tls=server)
    poster = Poster(dev_mode=True, cafile=str(cert_file))
    try:
        assert send(poster, p.url(scheme="https")).status == 200
        assert send(poster, p.url(scheme="https")).status == 200
    finally:
        poster.close()
    assert (p.connections, len(p.requests)) == (1, 2)


def test_tls_rp_with_an_untrusted_certificate_is_refused_unsent(
    tmp_path: Path, poster: Poster, peers: list[RawPeer]
) -> None:
    server, _ = _self_signed(tmp_path)
    p = peer(peers, keep_alive(OK), tls=server)
    res = deliver(poster, p.url(scheme="https"))
    assert (res.outcome, res.http_status) == (RETRY, None)
    assert res.error == "network error (ConnectionError: SSLCertVerificationError)"
    assert p.requests == []


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_posts_all_answer_and_idle_connections_stay_bounded(peers: list[RawPeer]) -> None:
    def slow_ok(conn: socket.socket, p: RawPeer) -> None:
        while p.read_request(conn) is not None:
            time.sleep(0.01)
            conn.sendall(OK)

    p = peer(peers, slow_ok)
    poster = Poster(dev_mode=True, max_idle_per_origin=3)
    statuses: list[int] = []
    lock = threading.Lock()

    def sender() -> None:
        for _ in range(20):
            status = send(poster, p.url()).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert statuses == [200] * 160
        assert len(p.requests) == 160
        assert 1 <= p.connections < 160  # kept alive
        assert poster.idle_connections() <= 3
    finally:
        poster.close()
    assert poster.idle_connections() == 0


# -- the idle pool ---------------------------------------------------------------------------


def test_idle_connections_are_bounded_in_all_the_origin_used_longest_ago_first(peers: list[RawPeer]) -> None:
    first, second, third = (peer(peers, keep_alive(OK)) for _ in range(3))
    poster = Poster(dev_mode=True, max_idle_per_origin=2, max_idle=2)
    try:
        for p in (first, second, third):
            assert send(poster, p.url()).status == 200
        assert poster.idle_connections() == 2
        for p in (third, second, first):
            assert send(poster, p.url()).status == 200
    finally:
        poster.close()
    # The first origin's connection was closed for the third's; the others were kept.
    assert (first.connections, second.connections, third.connections) == (2, 1, 1)


def test_a_connection_idle_longer_than_the_idle_timeout_is_not_used(peers: list[RawPeer]) -> None:
    p = peer(peers, keep_alive(OK))
    poster = Poster(dev_mode=True, idle_timeout=0.2)
    try:
        assert send(poster, p.url()).status == 200
        assert send(poster, p.url()).status == 200
        time.sleep(0.3)
        assert send(poster, p.url()).status == 200
    finally:
        poster.close()
    assert (p.connections, len(p.requests)) == (2, 3)


def test_an_ipv6_loopback_rp_is_reached(poster: Poster) -> None:
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = server.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while not data.endswith(b"logout_token=a.b.c"):
                data += conn.recv(65536)
            seen.append(data)
            conn.sendall(OK)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert send(poster, f"http://[::1]:{port}/bc").status == 200
    finally:
        t.join(5)
        server.close()
    assert f"host: [::1]:{port}" in seen[0].decode().lower()
