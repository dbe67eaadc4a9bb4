"""The admin API's list and search (``GET /admin/terminations``, ``GET /admin/deliveries``),
the requeue of a dead letter, and its OpenAPI 3.1 document (every admin route described;
valid against the OpenAPI 3.1 schema)."""

from __future__ import annotations

import re
import time

import requests
from openapi_spec_validator import validate

from oidc_logout.flask.routes import ROUTES
from oidc_logout.testing import Reply
from tests.termination.conftest import admin_token

from .conftest import sign_in


def _get(env, path: str, token: str, **params):  # type: ignore[no-untyped-def]
    return requests.get(
        f"{env.idp.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _terminate(env, token: str, **target) -> dict:  # type: ignore[no-untyped-def, type-arg]
    r = requests.post(
        f"{env.idp.url}/admin/terminations",
        json={**target, "reason": "test", "wait": 5},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_terminations_are_listed_newest_first_and_searched_by_subject_and_client(env_factory):
    env = env_factory(replies={"rp-c": [Reply(500)]}, delivery_max_attempts=1)
    token = admin_token(env)
    sign_in(env, "alice", names=("rp-a",))
    sign_in(env, "bob", names=("rp-b", "rp-c"))
    t_alice = _terminate(env, token, sub="alice")
    t_bob = _terminate(env, token, sub="bob")
    listed = _get(env, "/admin/terminations", token).json()["terminations"]
    assert [t["id"] for t in listed][:2] == [t_bob["id"], t_alice["id"]]
    assert listed[0]["initiator"] == "admin:admin"
    assert listed[0]["delivery_summary"] == {"delivered": 1, "dead": 1}
    by_sub = _get(env, "/admin/terminations", token, subject="alice").json()["terminations"]
    assert [t["id"] for t in by_sub] == [t_alice["id"]]
    by_client = _get(env, "/admin/terminations", token, client_id="rp-c").json()["terminations"]
    assert [t["id"] for t in by_client] == [t_bob["id"]]
    assert len(_get(env, "/admin/terminations", token, limit=1).json()["terminations"]) == 1
    bad = _get(env, "/admin/terminations", token, limit="many")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
    assert requests.get(f"{env.idp.url}/admin/terminations", timeout=10).status_code == 401


def test_deliveries_are_filtered_by_state_and_channel_and_a_dead_letter_is_requeued(env_factory):
    env = env_factory(replies={"rp-c": [Reply(500)]}, delivery_max_attempts=1)
    token = admin_token(env)
    sign_in(env, "alice", names=("rp-a", "rp-c"))
    _terminate(env, token, sub="alice")
    dead = _get(env, "/admin/deliveries", token, state="dead", channel="backchannel").json()["deliveries"]
    assert [(d["client_id"], d["state"]) for d in dead] == [("rp-c", "dead")]
    both = _get(env, "/admin/deliveries", token, state="dead,delivered").json()["deliveries"]
    assert sorted(d["state"] for d in both) == ["dead", "delivered"]
    assert _get(env, "/admin/deliveries", token, channel="frontchannel").json()["deliveries"] == []
    for bad in ({"state": "bogus"}, {"channel": "carrier-pigeon"}, {"limit": "0"}):
        r = _get(env, "/admin/deliveries", token, **bad)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", bad

    headers = {"Authorization": f"Bearer {token}"}
    env.rps.script("/rp-c", Reply(200))
    r = requests.post(f"{env.idp.url}/admin/deliveries/{dead[0]['id']}/retry", headers=headers, timeout=10)
    assert r.status_code == 200 and r.json() == {"requeued": 1}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = _get(env, "/admin/deliveries", token, client_id="rp-c", attempts="true").json()["deliveries"]
        if rows[0]["state"] == "delivered":
            break
        time.sleep(0.05)
    assert rows[0]["state"] == "delivered"
    assert [a["outcome"] for a in rows[0]["attempt_log"]] == ["dead", "delivered"]
    # A delivered row cannot be requeued; an unknown id is a 404; both change nothing.
    again = requests.post(
        f"{env.idp.url}/admin/deliveries/{dead[0]['id']}/retry", headers=headers, timeout=10
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    missing = requests.post(f"{env.idp.url}/admin/deliveries/999999/retry", headers=headers, timeout=10)
    assert missing.status_code == 404


def _openapi_path(flask_path: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", flask_path)


def test_the_openapi_document_describes_every_admin_route_and_is_valid(env_factory):
    env = env_factory()
    r = requests.get(f"{env.idp.url}/admin/openapi.json", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    validate(doc)  # OpenAPI 3.1 schema (openapi-spec-validator)
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": env.idp.url}]
    admin_routes = [route for route in ROUTES if route.path.startswith("/admin/")]
    assert len(admin_routes) >= 6
    for route in admin_routes:
        path = _openapi_path(route.path)
        assert path in doc["paths"], path
        for method in route.methods:
            assert method.lower() in doc["paths"][path], (method, path)
    # ... and nothing that is not served.
    served = {(_openapi_path(r.path), m.lower()) for r in admin_routes for m in r.methods}
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert described == served
