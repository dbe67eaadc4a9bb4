"""A small threaded HTTP server on a loopback port that captures every request (method,
path, query, headers, body) - the runner's stand-in RP endpoints (back-channel logout URI,
front-channel logout URI, redirect and post-logout redirect URIs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


class CaptureServer:
    """Captures requests; answers 200 ``ok`` (or what ``responder`` returns)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        responder: Callable[[Captured], tuple[int, dict[str, str], bytes]] | None = None,
    ) -> None:
        self.requests: list[Captured] = []
        self._cond = threading.Condition()
        self.responder = responder
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20)) if length else b""
                parts = urlsplit(self.path)
                cap = Captured(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    dict(self.headers.items()),
                    body,
                )
                status, headers, payload = (
                    owner.responder(cap) if owner.responder else (200, {"Content-Type": "text/plain"}, b"ok")
                )
                with owner._cond:
                    owner.requests.append(cap)
                    owner._cond.notify_all()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: object) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}" if ":" not in host else f"http://[{host}]:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> CaptureServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def matching(self, path: str, method: str | None = None) -> list[Captured]:
        with self._cond:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def wait_for(self, predicate: Callable[[list[Captured]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
