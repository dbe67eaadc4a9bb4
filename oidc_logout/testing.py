"""Helpers for tests of code that uses oidc_logout (and for this project's own tests and
benchmarks): a capturing HTTP server that stands in for relying-party endpoints.

:class:`CaptureServer` is a real threaded HTTP/1.1 server on a loopback port. It records every
request (method, path, query, headers, body, arrival time), answers each path as scripted
(status, headers, body, delay, a hang, a huge body), and lets a test *wait for an event* -
``wait_for(n, timeout)`` - instead of sleeping::

    from oidc_logout.testing import CaptureServer, Reply

    with CaptureServer() as rp:
        uri = rp.url("/backchannel", Reply(500), Reply(200))  # 500 first, then 200
        ...  # register uri as a client's backchannel_logout_uri, log the user out
        assert rp.wait_for(2, timeout=5, path="/backchannel")
        assert rp.hits("/backchannel")[1].sid == expected_sid

To prove that something did *not* happen, wait for a positive control that would have come
after it (another RP's notification, the row reaching a final state), then assert the absence.

Standard library only; the server binds a loopback address (127.0.0.1 by default).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["CaptureServer", "CapturedRequest", "Reply", "Responder", "per_sid"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: Read the request, never answer; the connection is closed when the server stops or
    #: after the server's ``hang_timeout``.
    hang: bool = False
    #: Send this many bytes of filler after ``body`` (a huge response; Content-Length counts it).
    stream_bytes: int = 0


@dataclass(frozen=True)
class CapturedRequest:
    """A request as the server received it."""

    method: str
    #: The path without the query string.
    path: str
    query: dict[str, list[str]]
    #: Header names as the client sent them; see :meth:`header` for a case-insensitive lookup.
    headers: dict[str, str]
    body: bytes
    #: ``time.monotonic()`` when the request (with its body) had arrived.
    at: float

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lower), None)

    @property
    def form(self) -> dict[str, list[str]]:
        """The body parsed as ``application/x-www-form-urlencoded``."""
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    @property
    def logout_token(self) -> str | None:
        """The ``logout_token`` form parameter (Back-Channel Logout 1.0 §2.5), if any."""
        values = self.form.get("logout_token")
        return values[0] if values else None

    def claims(self) -> dict[str, Any]:
        """The payload of the logout token, **not verified** (``{}`` if there is none or it
        does not parse). Verify the signature in the test if it matters."""
        return dict(self._claims)

    @cached_property
    def _claims(self) -> dict[str, Any]:
        token = self.logout_token
        try:
            payload = token.split(".")[1]  # type: ignore[union-attr]
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (AttributeError, IndexError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def sid(self) -> str | None:
        """The unverified logout token's ``sid`` claim, if any."""
        value = self._claims.get("sid")
        return value if isinstance(value, str) else None

    @property
    def jti(self) -> str | None:
        """The unverified logout token's ``jti`` claim, if any."""
        value = self._claims.get("jti")
        return value if isinstance(value, str) else None


#: A computed answer: called with the request, returns the reply.
Responder = Callable[[CapturedRequest], Reply]
_Answer = Reply | Responder


class _Truncated(Exception):
    """A request body shorter than its Content-Length: the sender went away mid-request."""


class CaptureServer:
    """A threaded HTTP/1.1 server on a loopback port that records requests and answers them
    as scripted per path (see the module docstring).

    ``default``: the answer for a path without a script. ``record=False`` keeps only the
    per-path counts (long benchmarks). ``hang_timeout`` bounds a :attr:`Reply.hang`.
    ``max_body``: bytes of a request body kept (the rest is read and dropped)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        default: Reply | None = None,
        record: bool = True,
        hang_timeout: float = 30.0,
        max_body: int = 1 << 20,
        backlog: int = 1024,
        start: bool = True,
    ) -> None:
        self.host = host
        self.default = default or Reply()
        self.record = record
        self.hang_timeout = hang_timeout
        self.max_body = max_body
        self.backlog = backlog
        self._cond = threading.Condition()
        self._requests: list[CapturedRequest] = []
        self._answered: list[CapturedRequest] = []
        self._counts: Counter[str] = Counter()
        self._active: Counter[str] = Counter()
        #: The most requests being answered at once, over all paths and per path (a sender's
        #: concurrency bound shows here).
        self.max_active = 0
        self.max_active_by_path: dict[str, int] = {}
        self._bytes_sent: Counter[str] = Counter()
        self._scripts: dict[str, list[_Answer]] = {}
        self._once: list[tuple[str, Callable[[CapturedRequest], bool] | None, Reply]] = []
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        if start:
            self.start()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> CaptureServer:
        """Listen (again: after :meth:`stop`, on the same port; the records are kept)."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        owner = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = owner.backlog
            address_family = socket.AF_INET6 if ":" in owner.host else socket.AF_INET

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a peer resetting its connection is expected in these tests

        self._httpd = Server((self.host, self.port), _handler_for(self))
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"capture-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused from now on), release hanging requests and
        close open connections, kept-alive ones included."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._cond:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------------

    def url(self, path: str, *answers: _Answer) -> str:
        """The absolute URL of ``path``; with ``answers``, script it first (see :meth:`script`)."""
        path = _norm(path)
        if answers:
            self.script(path, *answers)
        return self.base_url + path

    def script(self, path: str, *answers: _Answer) -> None:
        """Answer requests to ``path`` with ``answers`` in turn; the last one repeats. An
        answer is a :class:`Reply` or a :data:`Responder`."""
        with self._cond:
            self._scripts[_norm(path)] = list(answers) or [self.default]

    def once(self, path: str, reply: Reply, where: Callable[[CapturedRequest], bool] | None = None) -> None:
        """Answer the next request to ``path`` for which ``where`` holds with ``reply``, once,
        ahead of the path's script."""
        with self._cond:
            self._once.append((_norm(path), where, reply))

    def _answer_for(self, req: CapturedRequest) -> Reply:
        with self._cond:
            for i, (path, where, reply) in enumerate(self._once):
                if path == req.path and (where is None or where(req)):
                    del self._once[i]
                    return reply
            script = self._scripts.get(req.path)
            if not script:
                return self.default
            answer = script.pop(0) if len(script) > 1 else script[0]
        return answer if isinstance(answer, Reply) else answer(req)

    # -- what arrived --------------------------------------------------------------------------

    @property
    def requests(self) -> list[CapturedRequest]:
        """Every recorded request, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    def hits(self, path: str | None = None, method: str | None = None) -> list[CapturedRequest]:
        """The recorded requests to ``path`` (all paths if None), in arrival order."""
        path = _norm(path) if path is not None else None
        with self._cond:
            return [
                r
                for r in self._requests
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    def count(self, path: str | None = None) -> int:
        """Requests received (to ``path``, or in all); counted with ``record=False`` too."""
        with self._cond:
            return self._counts[_norm(path)] if path is not None else sum(self._counts.values())

    def bytes_sent(self, path: str) -> int:
        """Response bytes (body) written for ``path`` so far, over all its requests."""
        with self._cond:
            return self._bytes_sent[_norm(path)]

    def clear(self) -> None:
        """Forget what arrived (scripts stay)."""
        with self._cond:
            self._requests.clear()
            self._answered.clear()
            self._counts.clear()
            self._bytes_sent.clear()

    # -- waiting -------------------------------------------------------------------------------

    def wait_for(
        self,
        n: int,
        timeout: float,
        *,
        path: str | None = None,
        where: Callable[[CapturedRequest], bool] | None = None,
        answered: bool = False,
    ) -> bool:
        """Block until at least ``n`` recorded requests match (to ``path``, for which ``where``
        holds; with ``answered``, whose reply has also been finished or abandoned), or until
        ``timeout`` seconds have passed. True if they did."""
        path = _norm(path) if path is not None else None
        deadline = time.monotonic() + timeout
        seen = matched = 0
        with self._cond:
            while True:
                source = self._answered if answered else self._requests
                for req in source[seen:]:
                    if (path is None or req.path == path) and (where is None or where(req)):
                        matched += 1
                seen = len(source)
                if matched >= n:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def wait_until(self, predicate: Callable[[Sequence[CapturedRequest]], bool], timeout: float) -> bool:
        """Block until ``predicate(requests)`` holds (checked at every arrival) or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- handler side --------------------------------------------------------------------------

    def _arrived(self, req: CapturedRequest) -> None:
        with self._cond:
            self._counts[req.path] += 1
            self._active[req.path] += 1
            self.max_active = max(self.max_active, sum(self._active.values()))
            self.max_active_by_path[req.path] = max(
                self.max_active_by_path.get(req.path, 0), self._active[req.path]
            )
            if self.record:
                self._requests.append(req)
            self._cond.notify_all()

    def _answering(self, req: CapturedRequest) -> None:
        """``req`` stops counting as active: its answer is about to go out. Counted after
        the last byte instead, a client that read the answer could send its next request
        (on another connection) before this handler thread got here, and the RP counted one
        more at once than the client ever had in flight."""
        with self._cond:
            self._active[req.path] -= 1

    def _finished(self, req: CapturedRequest, sent: int, answering: bool = False) -> None:
        with self._cond:
            if not answering:
                self._active[req.path] -= 1
            self._bytes_sent[req.path] += sent
            if self.record:
                self._answered.append(req)
            self._cond.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            (self._connections.add if add else self._connections.discard)(conn)


def _norm(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _handler_for(server: CaptureServer) -> type[BaseHTTPRequestHandler]:
    filler = b"x" * 65536

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            server._track(self.connection, True)

        def finish(self) -> None:
            server._track(self.connection, False)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)[: server.max_body]
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, server.max_body)) if length else b""
            if len(body) < min(length, server.max_body):
                # The peer went away mid-body (a sender killed with SIGKILL): no server would
                # act on half a request, so it is not recorded as one.
                raise _Truncated
            rest = length - len(body)
            while rest > 0:  # keep the connection usable: read and drop the excess
                got = self.rfile.read(min(rest, 65536))
                if not got:
                    break
                rest -= len(got)
            return body

        def _handle(self) -> None:
            try:
                body = self._body()
            except _Truncated:
                self.close_connection = True
                return
            parts = urlsplit(self.path)
            req = CapturedRequest(
                self.command,
                parts.path or "/",
                parse_qs(parts.query, keep_blank_values=True),
                dict(self.headers.items()),
                body,
                time.monotonic(),
            )
            server._arrived(req)
            sent = 0
            answering = False
            try:
                reply = server._answer_for(req)
                if reply.hang:
                    server._stopping.wait(server.hang_timeout)
                    self.close_connection = True
                    return
                if reply.delay and server._stopping.wait(reply.delay):
                    self.close_connection = True
                    return
                server._answering(req)
                answering = True
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                total = len(reply.body) + reply.stream_bytes
                self.send_header("Content-Length", str(total))
                self.end_headers()
                self.wfile.write(reply.body)
                sent = len(reply.body)
                while sent < total and not server._stopping.is_set():
                    chunk = filler[: min(len(filler), total - sent)]
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                self.close_connection = True  # the client went away mid-reply
            finally:
                server._finished(req, sent, answering)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    return Handler


def per_sid(requests: Iterable[CapturedRequest]) -> Counter[str | None]:
    """How many requests carried a logout token for each ``sid`` (None: no sid)."""
    return Counter(r.sid for r in requests)
