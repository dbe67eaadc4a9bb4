"""POSTs to relying parties and event receivers over kept-alive HTTP/1.1 connections: the
transport of every outbox delivery, back-channel logouts (Back-Channel Logout 1.0 §2.5) and
Shared Signals pushes (RFC 8935 §2).

A delivery is one small POST whose answer is a status and a short body, thousands of times
per termination. Through requests + urllib3 + http.client it cost 0.89 ms of CPU per POST
(``email.parser`` reads every answer's headers), a third of a bulk termination's CPU per
delivery; here HTTP/1.1 framing is h11's (the sans-I/O parser of httpcore and uvicorn) on
plain sockets: 0.31-0.33 ms per POST, h11 about 0.1 of it (docs/performance.md).

What the requests session it replaced guaranteed holds here too:

* every connection is made only to an address the :class:`~oidc_logout._http.AddressPolicy`
  allows, resolved and checked at connect time and connected to exactly that address (no
  DNS-rebinding window), never through a proxy;
* redirects are never followed (the caller classifies a 3xx);
* the answer body is read up to ``max_bytes`` and until the deadline, then the connection is
  closed rather than drained;
* nothing is retried here: a request that was sent is never sent again (the RP may have
  acted on it; its ``jti`` would read as a replay). Retries are the outbox's business. An
  idle connection the server has closed is noticed before use (as urllib3 does) and
  replaced.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import h11
from requests.structures import CaseInsensitiveDict

from ._http import AddressPolicy, ResolutionTimeout, checked_addresses, uri_origin

__all__ = ["ConnectFailed", "PostFailed", "PostTimeout", "Poster", "Reply"]

_RECV = 65536


@dataclass(frozen=True)
class Reply:
    """An RP's answer: status, headers (case-insensitive), the body read and whether it was
    cut at the size limit or the deadline."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool


class PostFailed(Exception):
    """No HTTP answer: the connection failed, broke, or the answer was not HTTP/1.1.
    ``kind`` and ``cause`` name what happened for the attempt log (never a token)."""

    kind = "ConnectionError"

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause

    def describe(self) -> str:
        """The attempt log's words for it (the texts the requests-based transport wrote)."""
        return f"network error ({self.kind}: {self.cause})"


class ConnectFailed(PostFailed):
    """The connection could not be made (refused, unreachable, TLS handshake failed): the
    request was not sent."""


class PostTimeout(PostFailed):
    """The name lookup, the connect or the answer took longer than its timeout (``kind``:
    ``NameResolutionTimeout``, ``ConnectTimeout`` or ``ReadTimeout``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind

    def describe(self) -> str:
        return f"timeout ({self.kind})"


@dataclass
class _Conn:
    sock: socket.socket
    h11: h11.Connection
    idle_since: float = 0.0


class Poster:
    """Thread-safe POSTs with a pool of idle connections per origin (scheme, host,
    port). At most ``max_idle_per_origin`` are kept per origin and ``max_idle`` in all (the
    origins used longest ago give theirs up first: an OP with thousands of RPs must not hold a
    socket to each), and none longer than ``idle_timeout`` seconds (servers close idle
    connections on their own after a few seconds; one closed under a request is a retry)."""

    def __init__(
        self,
        *,
        dev_mode: bool = False,
        allowlist: tuple[str, ...] = (),
        user_agent: str = "oidc-logout",
        max_idle_per_origin: int = 16,
        max_idle: int = 256,
        idle_timeout: float = 30.0,
        cafile: str | None = None,
    ) -> None:
        self.policy = AddressPolicy(dev_mode=dev_mode, allowlist=tuple(allowlist))
        self.policy.networks()  # validate the CIDRs now, not at the first delivery
        self._user_agent = user_agent
        self._max_per_origin = max(1, max_idle_per_origin)
        self._max_idle = max(1, max_idle)
        self._idle_timeout = idle_timeout
        #: Idle connections per origin, the origin used last at the end (LRU order).
        self._idle: OrderedDict[tuple[str, str, int], list[_Conn]] = OrderedDict()
        self._idle_count = 0
        self._lock = threading.Lock()
        self._cafile = cafile
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    # -- the one request ----------------------------------------------------------------
    def post_form(
        self,
        url: str,
        fields: Mapping[str, str],
        *,
        headers: Mapping[str, str],
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int,
    ) -> Reply:
        """:meth:`post` of ``fields`` form-encoded (a back-channel logout, §2.5)."""
        return self.post(
            url,
            urlencode(dict(fields)).encode("ascii"),
            content_type="application/x-www-form-urlencoded",
            headers=headers,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_bytes=max_bytes,
        )

    def post(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str,
        headers: Mapping[str, str],
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int,
    ) -> Reply:
        """POST ``body`` to ``url`` once; the answer read up to ``max_bytes`` within
        ``connect_timeout + read_timeout`` of the call. Raises
        :class:`~oidc_logout._http.DisallowedAddress`, :class:`PostTimeout` or
        :class:`PostFailed`."""
        deadline = time.monotonic() + connect_timeout + read_timeout
        parts = urlsplit(url)
        origin = uri_origin(parts)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rpartition("@")[2]  # never send userinfo in Host
        try:
            request = h11.Request(
                method="POST",
                target=target,
                headers=[
                    ("Host", netloc),
                    ("User-Agent", self._user_agent),
                    *headers.items(),
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(body))),
                ],
            )
        except h11.LocalProtocolError:
            raise PostFailed("InvalidURL") from None  # e.g. whitespace in the path
        conn = self._idle_conn(origin) or self._connect(origin, connect_timeout)
        try:
            reply, reusable = self._exchange(conn, request, body, read_timeout, max_bytes, deadline)
        except BaseException:
            _close(conn)
            raise
        if reusable:
            self._put_back(origin, conn)
        else:
            _close(conn)
        return reply

    def _exchange(
        self,
        conn: _Conn,
        request: h11.Request,
        body: bytes,
        read_timeout: float,
        max_bytes: int,
        deadline: float,
    ) -> tuple[Reply, bool]:
        wire = conn.h11.send(request) + conn.h11.send(h11.Data(data=body)) + conn.h11.send(h11.EndOfMessage())
        sock = conn.sock
        try:
            sock.settimeout(max(0.001, min(read_timeout, deadline - time.monotonic())))
            sock.sendall(wire)
            response: h11.Response | None = None
            chunks: list[bytes] = []
            size = 0
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if response is None:
                            raise PostTimeout("ReadTimeout")
                        return self._reply(response, chunks, truncated=True), False
                    sock.settimeout(min(read_timeout, left))
                    try:
                        data = sock.recv(_RECV)
                    except TimeoutError:
                        if response is None:
                            raise
                        # The answer came, its body did not in time: what arrived is kept.
                        return self._reply(response, chunks, truncated=True), False
                    if not data and response is None:
                        raise PostFailed("RemoteDisconnected")  # closed without answering
                    conn.h11.receive_data(data)
                elif type(event) is h11.Response:
                    response = event
                    declared = _header(event, b"content-length")
                    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                        # Read none of an answer declared too large: the connection is closed.
                        return self._reply(event, [], truncated=True), False
                elif type(event) is h11.Data:
                    chunks.append(bytes(event.data))
                    size += len(event.data)
                    if size > max_bytes and response is not None:
                        return self._reply(response, chunks, truncated=True, cap=max_bytes), False
                elif type(event) is h11.EndOfMessage:
                    assert response is not None
                    reply = self._reply(response, chunks, truncated=False)
                    if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                        conn.h11.start_next_cycle()
                        return reply, True
                    return reply, False
                elif type(event) is h11.ConnectionClosed:
                    raise PostFailed("RemoteDisconnected")
                # h11.InformationalResponse (1xx): the final answer follows.
        except TimeoutError:
            raise PostTimeout("ReadTimeout") from None
        except h11.RemoteProtocolError:
            raise PostFailed("ProtocolError") from None
        except (ssl.SSLError, OSError) as exc:
            raise PostFailed(type(exc).__name__) from None

    @staticmethod
    def _reply(
        response: h11.Response, chunks: list[bytes], *, truncated: bool, cap: int | None = None
    ) -> Reply:
        body = b"".join(chunks)
        if cap is not None:
            body = body[:cap]
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name, value in response.headers:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        return Reply(response.status_code, headers, body, truncated)

    # -- connections ----------------------------------------------------------------------
    def _idle_conn(self, origin: tuple[str, str, int]) -> _Conn | None:
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                conn = idle.pop()  # the most recently used: the least likely to be closed
                self._idle_count -= 1
                if not idle:
                    del self._idle[origin]
            if time.monotonic() - conn.idle_since > self._idle_timeout or _dropped(conn.sock):
                _close(conn)  # too old, or closed by the server while idle (or it sent what was not asked)
                continue
            return conn

    def _put_back(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        conn.idle_since = time.monotonic()
        evicted: list[_Conn] = []
        with self._lock:
            idle = self._idle.get(origin)
            if self._closed or (idle is not None and len(idle) >= self._max_per_origin):
                evicted.append(conn)
            else:
                if idle is None:
                    idle = self._idle[origin] = []
                idle.append(conn)
                self._idle.move_to_end(origin)
                self._idle_count += 1
                while self._idle_count > self._max_idle:  # the origin used longest ago first
                    oldest, conns = next(iter(self._idle.items()))
                    evicted.append(conns.pop(0))
                    self._idle_count -= 1
                    if not conns:
                        del self._idle[oldest]
        for old in evicted:
            _close(old)

    def idle_connections(self) -> int:
        """Idle connections held now (all origins)."""
        with self._lock:
            return self._idle_count

    def _connect(self, origin: tuple[str, str, int], timeout: float) -> _Conn:
        scheme, host, port = origin
        try:
            # Resolved and every address checked now; the socket connects to exactly a
            # checked address (no second lookup an attacker's DNS could answer otherwise).
            addresses = checked_addresses(host, port, self.policy, timeout=timeout)
        except socket.gaierror:
            raise ConnectFailed("NameResolutionError") from None
        except ResolutionTimeout:
            raise PostTimeout("NameResolutionTimeout") from None
        last = "ConnectionRefusedError"
        for address in addresses:
            try:
                sock = socket.create_connection((address, port), timeout=timeout)
            except TimeoutError:
                raise PostTimeout("ConnectTimeout") from None
            except OSError as exc:
                last = type(exc).__name__
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":
                    sock = self._tls_context().wrap_socket(sock, server_hostname=host)
            except TimeoutError:
                sock.close()
                raise PostTimeout("ConnectTimeout") from None
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise ConnectFailed(type(exc).__name__) from None
            return _Conn(sock, h11.Connection(h11.CLIENT))
        raise ConnectFailed(last)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            cafile = self._cafile
            if cafile is None:
                import certifi  # the CA bundle requests verifies with (a dependency of it)

                cafile = certifi.where()
            self._tls = ssl.create_default_context(cafile=cafile)
        return self._tls

    def close(self) -> None:
        """Close every idle connection; connections in use close when their POST ends."""
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
            self._idle_count = 0
        for conn in conns:
            _close(conn)


def _header(response: h11.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _dropped(sock: socket.socket) -> bool:
    """An idle connection is unusable if it is readable: the server closed it (EOF) or sent
    bytes no request asked for."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _close(conn: _Conn) -> None:
    try:
        conn.sock.close()
    except OSError:
        pass
