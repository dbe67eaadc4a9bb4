"""Real HTTP servers on loopback ports for tests (no mocked HTTP peers)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import make_server

from oidc_logout._redact import install_server_log_redaction


def read_http_message(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 message from ``sock``: its head and its Content-Length body (what arrived
    of it if the peer closed early); None if the peer closed before a whole head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


class LiveServer:
    """A threaded werkzeug server on 127.0.0.1 with a free port; the WSGI app can be set
    after the port is known (an issuer URL needs the port)."""

    def __init__(self, app: Callable[..., Any] | None = None) -> None:
        install_server_log_redaction()
        self.app = app
        self._server = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _dispatch(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.app is not None, "LiveServer app not set"
        return self.app(environ, start_response)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class SilentServer:
    """A TCP server on loopback that accepts connections and never says a word: a database
    host that is up at the network level but stalled."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop = True
        for c in self.accepted:
            c.close()
        self.sock.close()
