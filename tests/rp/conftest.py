"""Fixtures: a real loopback OP (discovery, JWKS, revocation), Redis and PostgreSQL."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from .tokens import NOW, public_jwks, rsa_key

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Clock:
    """Injectable clock: tests move time explicitly."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


class ServerThread:
    """A WSGI app served by werkzeug on 127.0.0.1:<ephemeral port> in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeOP:
    """A minimal but real OP over HTTP: discovery, JWKS with rotation, revocation."""

    def __init__(self) -> None:
        self.keys = [rsa_key("k1")]
        self.jwks_cache_control: str | None = "max-age=600"
        self.requests: Counter[str] = Counter()
        self.revocations: list[dict[str, Any]] = []
        self.revocation_status = 200
        self.discovery_overrides: dict[str, Any] = {}
        self.extra_routes: dict[str, Any] = {}
        self._srv = ServerThread(self.wsgi)
        self.issuer = self._srv.url

    def discovery(self) -> dict[str, Any]:
        doc = {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + "/jwks",
            "end_session_endpoint": self.issuer + "/logout?ui=1",
            "revocation_endpoint": self.issuer + "/revoke",
            "backchannel_logout_supported": True,
        }
        doc.update(self.discovery_overrides)
        return doc

    def wsgi(self, environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        self.requests[req.path] += 1
        if req.path == "/.well-known/openid-configuration":
            resp = Response(
                json.dumps(self.discovery()),
                mimetype="application/json",
                headers={"Cache-Control": "max-age=3600"},
            )
        elif req.path == "/jwks":
            headers = {"Cache-Control": self.jwks_cache_control} if self.jwks_cache_control else {}
            resp = Response(json.dumps(public_jwks(*self.keys)), mimetype="application/json", headers=headers)
        elif req.path == "/revoke" and req.method == "POST":
            self.revocations.append(
                {"form": dict(req.form), "authorization": req.headers.get("Authorization")}
            )
            resp = Response("", status=self.revocation_status)
        elif req.path in self.extra_routes:
            resp = self.extra_routes[req.path](req)
        else:
            resp = Response("not found", status=404)
        return resp(environ, start_response)

    def stop(self) -> None:
        self._srv.stop()


@pytest.fixture
def op() -> Iterator[FakeOP]:
    server = FakeOP()
    yield server
    server.stop()


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_client() -> Iterator[Any]:
    redis = pytest.importorskip("redis")
    if not _reachable(6379):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: Any) -> Iterator[str]:
    """A unique key prefix for this test; every key under it is deleted afterwards."""
    prefix = f"test:oidc_logout_rp:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def pg_engine() -> Iterator[Any]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    if not _reachable(5432):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    engine = sqlalchemy.create_engine(PG_URL, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Any) -> Iterator[Any]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'rp.db'}")
    yield engine
    engine.dispose()


def unique_table_prefix() -> str:
    return f"t_{uuid.uuid4().hex[:10]}_"
