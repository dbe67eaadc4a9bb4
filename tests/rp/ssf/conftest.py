"""A real SSF transmitter on loopback for the receiver tests, and SETs built with joserfc.

The SETs are signed with joserfc (an independent JOSE library), the receiver verifies them with
jwcrypto against the transmitter's JWKS fetched over HTTP.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.wrappers import Request, Response

from oidc_logout.rp import JWKSCache, MemoryReplayCache, MemorySessionIndex, SETValidator, SSFReceiver
from oidc_logout.rp.ssf import SESSION_REVOKED, VERIFICATION
from tests.support.servers import LiveServer

from ..conftest import Clock

AUDIENCE = "https://rp.example/ssf"
NOW = 1_700_000_000.0


@cache
def rsa(kid: str, size: int = 2048) -> RSAKey:
    return RSAKey.generate_key(size, parameters={"kid": kid}, auto_kid=False)


def sign(claims: dict[str, Any], key: RSAKey | None = None, **header: Any) -> str:
    """A compact JWS by joserfc; header defaults to RS256, the key's kid, typ secevent+jwt.
    A header override of ``None`` removes that parameter."""
    key = key or rsa("k1")
    h: dict[str, Any] = {"alg": "RS256", "kid": key.kid, "typ": "secevent+jwt"}
    for k, v in header.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    return jwt.encode(h, claims, key, algorithms=[h["alg"]])


def set_claims(
    issuer: str,
    *,
    event_type: str = SESSION_REVOKED,
    event: dict[str, Any] | None = None,
    sub_id: Any = "default",
    now: float = NOW,
    **overrides: Any,
) -> dict[str, Any]:
    """Valid SET claims (SSF profile); an override of ``None`` (``sub_id`` too) removes the claim."""
    c: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "iat": int(now),
        "jti": uuid.uuid4().hex,
        "txn": "txn-1",
        "sub_id": sub_id
        if sub_id != "default"
        else {
            "format": "complex",
            "session": {"format": "opaque", "id": "op-sid-1"},
            "user": {"format": "iss_sub", "iss": issuer, "sub": "alice"},
        },
        "events": {
            event_type: event
            if event is not None
            else {
                "initiating_entity": "user",
                "reason_admin": {"en": "User logout"},
                "event_timestamp": int(now),
            }
        },
    }
    if sub_id is None:
        del c["sub_id"]
    for k, v in overrides.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def make_set(issuer: str, key: RSAKey | None = None, header: dict[str, Any] | None = None, **kw: Any) -> str:
    return sign(set_claims(issuer, **kw), key, **(header or {}))


class Transmitter:
    """A minimal SSF transmitter over real HTTP: ssf-configuration, JWKS (with rotation), a
    client-credentials token endpoint, stream creation, status and verification (which pushes
    a verification SET to the stream's endpoint from another thread)."""

    def __init__(self) -> None:
        self.keys: list[RSAKey] = [rsa("k1")]
        self.requests: Counter[str] = Counter()
        self.streams: dict[str, dict[str, Any]] = {}
        self.pushes: list[requests.Response] = []
        self.pushed = threading.Event()
        self.metadata_overrides: dict[str, Any] = {}
        self.stream_overrides: dict[str, Any] = {}
        self.token_requests: list[dict[str, Any]] = []
        #: The iat of the SETs it makes (None: the real time).
        self.now: float | None = NOW
        self.server = LiveServer(self.wsgi).start()
        self.issuer = self.server.url

    def metadata(self) -> dict[str, Any]:
        i = self.issuer
        doc = {
            "spec_version": "1_0",
            "issuer": i,
            "jwks_uri": f"{i}/jwks",
            "delivery_methods_supported": ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"],
            "configuration_endpoint": f"{i}/ssf/stream",
            "status_endpoint": f"{i}/ssf/status",
            "verification_endpoint": f"{i}/ssf/verify",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
            "default_subjects": "ALL",
        }
        doc.update(self.metadata_overrides)
        return doc

    def _json(self, doc: Any, status: int = 200) -> Response:
        return Response(json.dumps(doc), status=status, mimetype="application/json")

    def wsgi(self, environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        self.requests[req.path] += 1
        resp = self._route(req)
        return resp(environ, start_response)

    def _route(self, req: Request) -> Response:
        if req.path == "/.well-known/ssf-configuration":
            return self._json(self.metadata())
        if req.path == "/.well-known/openid-configuration":
            i = self.issuer
            return self._json({"issuer": i, "jwks_uri": f"{i}/jwks", "token_endpoint": f"{i}/token"})
        if req.path == "/jwks":
            return self._json({"keys": [k.as_dict(private=False) for k in self.keys]})
        if req.path == "/token" and req.method == "POST":
            self.token_requests.append({"form": dict(req.form), "auth": req.authorization})
            if req.authorization is None or req.authorization.password != "receiver-secret":
                return self._json({"error": "invalid_client"}, 401)
            return self._json({"access_token": "mgmt-token", "token_type": "Bearer", "expires_in": 300})
        if req.headers.get("Authorization") != "Bearer mgmt-token":
            return self._json({"error": "invalid_token"}, 401)
        if req.path == "/ssf/stream" and req.method == "POST":
            body = req.get_json()
            stream_id = uuid.uuid4().hex
            delivery = body.get("delivery") or {"method": "urn:ietf:rfc:8936"}
            if delivery["method"] == "urn:ietf:rfc:8936":
                delivery = {
                    "method": "urn:ietf:rfc:8936",
                    "endpoint_url": f"{self.issuer}/ssf/poll/{stream_id}",
                }
            stream = {
                "stream_id": stream_id,
                "iss": self.issuer,
                "aud": AUDIENCE,
                "delivery": delivery,
                "events_supported": [SESSION_REVOKED, VERIFICATION],
                "events_requested": body.get("events_requested", []),
                "events_delivered": [e for e in body.get("events_requested", []) if e == SESSION_REVOKED],
            }
            stream.update(self.stream_overrides)
            self.streams[stream_id] = stream
            return self._json(stream, 201)
        if req.path == "/ssf/stream" and req.method == "GET":
            stream = self.streams.get(req.args.get("stream_id", ""))
            return self._json(stream) if stream else self._json({}, 404)
        if req.path == "/ssf/status":
            if req.args.get("stream_id") not in self.streams:
                return self._json({}, 404)
            return self._json({"stream_id": req.args["stream_id"], "status": "enabled"})
        if req.path == "/ssf/verify" and req.method == "POST":
            body = req.get_json()
            stream = self.streams.get(body.get("stream_id"))
            if stream is None:
                return self._json({}, 404)
            token = make_set(
                self.issuer,
                key=self.keys[-1],
                event_type=VERIFICATION,
                event={"state": body["state"]} if "state" in body else {},
                sub_id={"format": "opaque", "id": stream["stream_id"]},
                now=self.now if self.now is not None else time.time(),
            )
            threading.Thread(target=self._push, args=(stream, token), daemon=True).start()
            return Response(status=204)
        return Response("not found", status=404)

    def push(self, stream: dict[str, Any], token: str) -> requests.Response:
        """One RFC 8935 push (§2.1): POST the SET as application/secevent+jwt."""
        delivery = stream["delivery"]
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if "authorization_header" in delivery:
            headers["Authorization"] = delivery["authorization_header"]
        return requests.post(delivery["endpoint_url"], data=token, headers=headers, timeout=10)

    def _push(self, stream: dict[str, Any], token: str) -> None:
        self.pushes.append(self.push(stream, token))
        self.pushed.set()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def transmitter() -> Iterator[Transmitter]:
    t = Transmitter()
    yield t
    t.stop()


@pytest.fixture
def ssf_clock() -> Clock:
    return Clock(NOW)


def build_validator(transmitter: Transmitter, clock: Clock, **kw: Any) -> SETValidator:
    keys = JWKSCache(f"{transmitter.issuer}/jwks", clock=clock, unknown_kid_refetch_interval=0)
    return SETValidator(issuer=transmitter.issuer, audience=AUDIENCE, keys=keys, clock=clock, **kw)


@pytest.fixture
def validator(transmitter: Transmitter, ssf_clock: Clock) -> SETValidator:
    return build_validator(transmitter, ssf_clock, replay_cache=MemoryReplayCache(clock=ssf_clock))


class Ended(list[str]):
    """Records the local sessions the receiver ended (the app's end_local_session)."""


@pytest.fixture
def index() -> MemorySessionIndex:
    return MemorySessionIndex()


@pytest.fixture
def receiver(validator: SETValidator, index: MemorySessionIndex, ssf_clock: Clock) -> SSFReceiver:
    ended = Ended()
    r = SSFReceiver(validator, index, ended.append, clock=ssf_clock)
    r.ended_log = ended  # type: ignore[attr-defined]
    return r
