"""Stream management (SSF 1.0 §8.1.1-§8.1.3): create, read, update, replace, delete, status and
subjects, authorised with client-credentials access tokens holding ``ssf.manage`` /
``ssf.read`` (CAEP Interop §2.7.2); a receiver sees only its own streams."""

from __future__ import annotations

import requests
from sqlalchemy import func, select

from oidc_logout.ssf import POLL, PUSH, SESSION_REVOKED
from oidc_logout.storage.models import SSFStream, SSFSubject


def _count(env, model) -> int:
    with env.idp.provider.session_factory() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_a_receiver_creates_reads_updates_replaces_and_deletes_its_stream(env):
    cfg = env.push_stream(description="first")
    sid = cfg["stream_id"]
    # §8.1.1: iss is the transmitter's issuer, aud identifies the receiver.
    assert cfg["iss"] == env.url and cfg["aud"] == "receiver"
    assert cfg["delivery"]["method"] == PUSH
    # §8.1.1: events_delivered is a subset of the intersection of supported and requested.
    assert set(cfg["events_delivered"]) <= set(cfg["events_supported"]) & set(cfg["events_requested"])
    assert SESSION_REVOKED in cfg["events_delivered"]

    # §8.1.1.2: GET with stream_id returns it; without, the list of this receiver's streams.
    got = env.api("GET", "/ssf/stream", params={"stream_id": sid})
    assert got.status_code == 200 and got.json() == cfg
    assert got.headers["Cache-Control"] == "no-store"
    listed = env.api("GET", "/ssf/stream")
    assert [s["stream_id"] for s in listed.json()] == [sid]
    # ssf.read suffices for reading (CAEP Interop §2.7.2) - but it is another client: its list is empty.
    assert env.api("GET", "/ssf/stream", "reader").json() == []

    # §8.1.1.3 PATCH: present members change, missing ones stay.
    patched = env.api("PATCH", "/ssf/stream", json={"stream_id": sid, "description": "second"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "second"
    assert patched.json()["events_requested"] == cfg["events_requested"]

    # §8.1.1.4 PUT: missing Receiver-Supplied members are deleted.
    put = env.api("PUT", "/ssf/stream", json={"stream_id": sid, "delivery": cfg["delivery"]})
    assert put.status_code == 200, put.text
    assert put.json()["events_requested"] == [] and "description" not in put.json()
    assert put.json()["events_delivered"] == []

    # §8.1.1.5 DELETE: 204, then 404.
    assert env.api("DELETE", "/ssf/stream", params={"stream_id": sid}).status_code == 204
    assert env.api("GET", "/ssf/stream", params={"stream_id": sid}).status_code == 404
    assert _count(env, SSFStream) == 0


def test_a_stream_without_delivery_is_a_poll_stream_with_a_transmitter_supplied_url(env):
    """§8.1.1.1: no delivery -> method urn:ietf:rfc:8936 and an endpoint_url from the transmitter."""
    resp = env.api("POST", "/ssf/stream", json={"events_requested": [SESSION_REVOKED]})
    assert resp.status_code == 201, resp.text
    delivery = resp.json()["delivery"]
    assert delivery["method"] == POLL
    assert delivery["endpoint_url"] == f"{env.url}/ssf/poll/{resp.json()['stream_id']}"


def test_another_clients_stream_is_not_found_and_unchanged(env):
    """SSF §8: authorization associates a receiver with its stream ids; others get 404."""
    sid = env.push_stream(description="mine")["stream_id"]
    for method, kw in (
        ("GET", {"params": {"stream_id": sid}}),
        ("PATCH", {"json": {"stream_id": sid, "description": "theirs"}}),
        ("DELETE", {"params": {"stream_id": sid}}),
    ):
        assert env.api(method, "/ssf/stream", "other", **kw).status_code == 404, method
    assert env.api("GET", "/ssf/status", "other", params={"stream_id": sid}).status_code == 404
    assert env.api("POST", "/ssf/verify", "other", json={"stream_id": sid}).status_code == 404
    assert env.api("GET", "/ssf/stream", params={"stream_id": sid}).json()["description"] == "mine"


def test_a_token_without_the_ssf_scope_is_refused_with_403_and_no_token_with_401(env):
    """CAEP Interop §2.7.3: errors per RFC 6750 §3.1 (insufficient_scope 403, invalid_token 401)."""
    body = {"delivery": {"method": POLL}}
    resp = env.api("POST", "/ssf/stream", "tool", json=body)
    assert resp.status_code == 403
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    # ssf.read does not manage.
    assert env.api("POST", "/ssf/stream", "reader", json=body).status_code == 403
    resp = requests.post(f"{env.url}/ssf/stream", json=body, timeout=10)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    # CAEP Interop §2.7.3: "MUST NOT accept access tokens in the query parameters".
    resp = requests.post(f"{env.url}/ssf/stream", params={"access_token": env.token()}, json=body, timeout=10)
    assert resp.status_code == 401
    assert _count(env, SSFStream) == 0


def test_bad_stream_requests_get_clear_errors_and_change_nothing(env):
    cases = [
        {"delivery": {"method": "urn:example:carrier-pigeon"}},
        {"delivery": {"method": PUSH}},  # no endpoint_url
        {"delivery": {"method": PUSH, "endpoint_url": "ftp://rx.example/events"}},
        {"events_requested": "not-a-list"},
        {"subject_format": "phone_number"},
        {"delivery": {"method": PUSH, "endpoint_url": env.rx.url("/x"), "authorization_header": "a\nb"}},
    ]
    for body in cases:
        resp = env.api("POST", "/ssf/stream", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"] == "invalid_request" and resp.json()["error_description"]
    assert (
        env.api("POST", "/ssf/stream", data="{", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert _count(env, SSFStream) == 0
    sid = env.push_stream()["stream_id"]
    # §8.1.1.3: Transmitter-Supplied members present MUST match.
    resp = env.api("PATCH", "/ssf/stream", json={"stream_id": sid, "aud": "someone-else", "description": "x"})
    assert resp.status_code == 400
    assert "description" not in env.api("GET", "/ssf/stream", params={"stream_id": sid}).json()
    # The delivery method of a stream does not change.
    assert (
        env.api("PATCH", "/ssf/stream", json={"stream_id": sid, "delivery": {"method": POLL}}).status_code
        == 400
    )


def test_status_reads_and_updates_and_refuses_unknown_values(env):
    sid = env.push_stream()["stream_id"]
    # §8.1.2.1: a new stream is enabled.
    assert env.api("GET", "/ssf/status", params={"stream_id": sid}).json() == {
        "stream_id": sid,
        "status": "enabled",
    }
    resp = env.api(
        "POST", "/ssf/status", json={"stream_id": sid, "status": "paused", "reason": "maintenance"}
    )
    assert resp.status_code == 200
    assert resp.json() == {"stream_id": sid, "status": "paused", "reason": "maintenance"}
    assert env.api("GET", "/ssf/status", "reader", params={"stream_id": sid}).status_code == 404
    assert env.api("POST", "/ssf/status", json={"stream_id": sid, "status": "sleeping"}).status_code == 400
    assert env.api("GET", "/ssf/status", params={"stream_id": sid}).json()["status"] == "paused"
    # §8.1.2.1: unknown stream -> 404.
    assert env.api("GET", "/ssf/status", params={"stream_id": "nope"}).status_code == 404


def test_subjects_are_added_and_removed_with_the_codes_of_the_spec(env):
    sid = env.push_stream()["stream_id"]
    subject = {"format": "email", "email": "alice@example.org"}
    resp = env.api("POST", "/ssf/subjects:remove", json={"stream_id": sid, "subject": subject})
    assert resp.status_code == 204  # §8.1.3.3
    resp = env.api("POST", "/ssf/subjects:add", json={"stream_id": sid, "subject": subject, "verified": True})
    assert resp.status_code == 200 and resp.content == b""  # §8.1.3.2: empty 200
    bad = env.api("POST", "/ssf/subjects:add", json={"stream_id": sid, "subject": {"format": "email"}})
    assert bad.status_code == 400
    assert (
        env.api("POST", "/ssf/subjects:add", "other", json={"stream_id": sid, "subject": subject}).status_code
        == 404
    )
    assert _count(env, SSFSubject) == 1
