"""RFC 8936 poll client against a real poll endpoint on loopback (an http.server implementing
the RFC's request and response): SETs are collected, validated, processed, acknowledged, and
failures are reported in setErrs."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from oidc_logout.rp import PollingReceiver, poll
from oidc_logout.rp.ssf_poll import PollError

from .conftest import make_set


class PollServer:
    """RFC 8936 poll endpoint: each queued SET is handed out once (§2.5 "sets" keyed by jti,
    "moreAvailable"); acknowledgements (§2.4.3) and errors (§2.4.4) are recorded."""

    def __init__(self, token: str = "poll-token") -> None:
        self.token = token
        self.queue: list[tuple[str, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.acked: list[str] = []
        self.errors: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {owner.token}":
                    return self._reply(401, {"err": "authentication_failed", "description": "bad token"})
                if self.headers.get("Content-Type") != "application/json":
                    return self._reply(400, {"err": "invalid_request", "description": "json expected"})
                req = json.loads(body)
                with owner.lock:
                    owner.requests.append(req)
                    owner.acked.extend(req.get("ack", []))
                    owner.errors.update(req.get("setErrs", {}))
                    n = req.get("maxEvents", len(owner.queue))
                    out, owner.queue = owner.queue[:n], owner.queue[n:]
                    more = bool(owner.queue)
                return self._reply(200, {"sets": dict(out), "moreAvailable": more})

            def _reply(self, status: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ssf/poll/stream-1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def enqueue(self, token: str) -> str:
        payload = token.split(".")[1]
        jti = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
        self.queue.append((jti, token))
        return jti

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def poll_server() -> Iterator[PollServer]:
    server = PollServer()
    yield server
    server.stop()


def revoke(issuer: str, sid: str, **kw: Any) -> str:
    return make_set(issuer, sub_id={"format": "opaque", "id": sid}, **kw)


def test_poll_collects_processes_and_acknowledges_every_set(poll_server, receiver, index, transmitter):
    """RFC 8936 §2.4: five SETs in batches of two, each processed once and acknowledged; the
    last acknowledgements go out in an acknowledge-only request (maxEvents 0, §2.4.2)."""
    for n in range(5):
        index.register(transmitter.issuer, f"user-{n}", f"sid-{n}", f"local-{n}")
    jtis = [poll_server.enqueue(revoke(transmitter.issuer, f"sid-{n}")) for n in range(5)]
    summary = PollingReceiver(receiver, poll_server.url, "poll-token", max_events=2).run()
    assert sorted(poll_server.acked) == sorted(jtis) and len(poll_server.acked) == 5
    assert sorted(receiver.ended_log) == [f"local-{n}" for n in range(5)]
    assert summary.requests == 4 and len(summary.received) == 5
    assert poll_server.requests[0] == {"maxEvents": 2, "returnImmediately": True}
    assert poll_server.requests[-1]["maxEvents"] == 0 and len(poll_server.requests[-1]["ack"]) == 1
    # every acknowledgement was sent exactly once
    assert sum(len(r.get("ack", [])) for r in poll_server.requests) == 5


def test_invalid_set_is_reported_in_set_errs_with_its_rfc8935_code(poll_server, receiver, index, transmitter):
    """RFC 8936 §2.4.4: a SET the receiver cannot accept goes back in setErrs (err, description),
    the valid ones are acknowledged."""
    index.register(transmitter.issuer, "alice", "sid-a", "local-a")
    good = poll_server.enqueue(revoke(transmitter.issuer, "sid-a"))
    bad = poll_server.enqueue(revoke(transmitter.issuer, "sid-a", aud="https://someone-else"))
    summary = PollingReceiver(receiver, poll_server.url, "poll-token").run()
    assert poll_server.acked == [good]
    assert poll_server.errors[bad]["err"] == "invalid_audience"
    assert summary.rejected[bad]["err"] == "invalid_audience" and receiver.ended_log == ["local-a"]


def test_set_whose_key_is_not_its_jti_is_rejected_unprocessed(poll_server, receiver, index, transmitter):
    """RFC 8936 §2.5: each key of "sets" is the jti of the SET it maps to."""
    index.register(transmitter.issuer, "alice", "sid-a", "local-a")
    poll_server.queue.append(("not-the-jti", revoke(transmitter.issuer, "sid-a")))
    PollingReceiver(receiver, poll_server.url, "poll-token").run()
    assert poll_server.errors["not-the-jti"]["err"] == "invalid_request"
    assert receiver.ended_log == [] and poll_server.acked == []


def test_redelivered_set_is_acknowledged_again_without_acting(poll_server, receiver, index, transmitter):
    """A SET whose acknowledgement was lost comes back: ack it again, do nothing twice."""
    index.register(transmitter.issuer, "alice", "sid-a", "local-a")
    token = revoke(transmitter.issuer, "sid-a")
    jti = poll_server.enqueue(token)
    PollingReceiver(receiver, poll_server.url, "poll-token").run()
    index.register(transmitter.issuer, "alice", "sid-a", "local-a-again")
    poll_server.enqueue(token)
    PollingReceiver(receiver, poll_server.url, "poll-token").run()
    assert poll_server.acked == [jti, jti] and receiver.ended_log == ["local-a"]


def test_run_is_bounded_and_stoppable(poll_server, receiver, transmitter):
    """max_requests bounds the loop; a set stop event ends it before any request."""
    for n in range(6):
        poll_server.enqueue(revoke(transmitter.issuer, f"sid-{n}"))
    bounded = PollingReceiver(receiver, poll_server.url, "poll-token", max_events=1).run(max_requests=2)
    assert len(bounded.received) == 2 and len(poll_server.queue) == 4
    stop = threading.Event()
    stop.set()
    before = len(poll_server.requests)
    PollingReceiver(receiver, poll_server.url, "poll-token").run(stop=stop)
    assert len(poll_server.requests) == before


def test_refused_poll_raises_poll_error(poll_server):
    """RFC 8936 §2.5.1: an error answer is reported, not mistaken for an empty batch."""
    with pytest.raises(PollError) as info:
        poll(poll_server.url, "wrong-token", max_events=1, return_immediately=True)
    assert "401" in info.value.description and "authentication_failed" in info.value.description


def test_poll_request_carries_exactly_the_given_members(poll_server):
    """RFC 8936 §2.2: maxEvents, returnImmediately, ack and setErrs, each only when given."""
    resp = poll(
        poll_server.url,
        "poll-token",
        max_events=0,
        return_immediately=True,
        acks=["j1"],
        set_errs={"j2": {"err": "invalid_key", "description": "x"}},
    )
    assert resp.sets == {} and resp.more_available is False
    assert poll_server.requests == [
        {
            "maxEvents": 0,
            "returnImmediately": True,
            "ack": ["j1"],
            "setErrs": {"j2": {"err": "invalid_key", "description": "x"}},
        }
    ]
