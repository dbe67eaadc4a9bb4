"""Poll delivery (RFC 8936): a receiver collects SETs, acknowledges them (``ack``), reports
errors (``setErrs``); unacknowledged SETs come again; paused streams return nothing until
enabled; long polls return as soon as an event exists."""

from __future__ import annotations

import threading

import requests
from sqlalchemy import select

from oidc_logout.ssf import SESSION_REVOKED, VERIFICATION
from oidc_logout.storage.models import SSFEvent

from .conftest import make_env
from .test_push import _end_session


def _poll_stream(env, client_id="receiver"):
    resp = env.api("POST", "/ssf/stream", client_id, json={"events_requested": [SESSION_REVOKED]})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _poll(env, stream, token=None, **body):
    resp = requests.post(
        stream["delivery"]["endpoint_url"],
        json=body,
        headers={"Authorization": f"Bearer {token or env.token()}"},
        timeout=30,
    )
    return resp


def test_a_poll_receiver_collects_and_acknowledges_a_session_revoked(env):
    stream = _poll_stream(env)
    browser, tokens = env.sign_in("alice")
    _end_session(env, browser, tokens)
    resp = _poll(env, stream, returnImmediately=True, maxEvents=10)
    assert resp.status_code == 200
    # RFC 8936 §2.5: application/json with "sets": {jti: SET} (and "moreAvailable").
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["moreAvailable"] is False
    [(jti, raw)] = body["sets"].items()
    tok = env.decode(raw)
    assert tok.header["typ"] == "secevent+jwt"  # RFC 8417 §2.3
    assert tok.claims["jti"] == jti  # §2.5: keyed by the SET's jti
    assert tok.claims["aud"] == stream["aud"] and tok.claims["iss"] == env.url
    assert list(tok.claims["events"]) == [SESSION_REVOKED]
    # §2.4.2: ack - the SET is not returned again.
    resp = _poll(env, stream, returnImmediately=True, ack=[jti])
    assert resp.status_code == 200 and resp.json()["sets"] == {}
    with env.idp.provider.session_factory() as db:
        assert [(e.id, e.state) for e in db.scalars(select(SSFEvent))] == [(jti, "acked")]


def test_an_unacknowledged_set_is_returned_again_and_set_errs_acknowledge(sqlite_url):
    env = make_env(sqlite_url, ssf_poll_redeliver_after=0.0)
    try:
        stream = _poll_stream(env)
        for _ in range(2):
            assert (
                env.api(
                    "POST", "/ssf/verify", json={"stream_id": stream["stream_id"], "state": "x"}
                ).status_code
                == 204
            )
        first = _poll(env, stream, returnImmediately=True, maxEvents=1).json()
        assert first["moreAvailable"] is True and len(first["sets"]) == 1
        jti = next(iter(first["sets"]))
        again = _poll(env, stream, returnImmediately=True, maxEvents=5).json()
        assert jti in again["sets"] and len(again["sets"]) == 2  # not acknowledged: sent again
        other = next(j for j in again["sets"] if j != jti)
        # §2.4.4 setErrs: reported SETs are acknowledged with their error.
        resp = _poll(
            env,
            stream,
            returnImmediately=True,
            ack=[jti],
            setErrs={other: {"err": "invalid_state", "description": "bad"}},
        )
        assert resp.json()["sets"] == {}
        with env.idp.provider.session_factory() as db:
            states = {e.id: (e.state, e.error) for e in db.scalars(select(SSFEvent))}
        assert states == {jti: ("acked", None), other: ("error", "invalid_state: bad")}
    finally:
        env.idp.stop()
        env.rx.stop()


def test_a_paused_poll_stream_returns_nothing_until_enabled(env):
    stream = _poll_stream(env)
    sid = stream["stream_id"]
    env.api("POST", "/ssf/status", json={"stream_id": sid, "status": "paused"})
    browser, tokens = env.sign_in("alice")
    _end_session(env, browser, tokens)
    assert _poll(env, stream, returnImmediately=True).json()["sets"] == {}
    env.api("POST", "/ssf/status", json={"stream_id": sid, "status": "enabled"})
    sets = _poll(env, stream, returnImmediately=True).json()["sets"]
    assert [list(env.decode(s).claims["events"]) for s in sets.values()] == [[SESSION_REVOKED]]


def test_a_long_poll_returns_the_event_that_arrives_while_it_waits(env):
    stream = _poll_stream(env)
    token = env.token()
    result: dict = {}

    def long_poll() -> None:
        result["resp"] = _poll(env, stream, token=token, returnImmediately=False)

    t = threading.Thread(target=long_poll)
    t.start()
    assert (
        env.api("POST", "/ssf/verify", json={"stream_id": stream["stream_id"], "state": "lp"}).status_code
        == 204
    )
    t.join(60)
    sets = result["resp"].json()["sets"]
    assert [env.decode(s).claims["events"] for s in sets.values()] == [{VERIFICATION: {"state": "lp"}}]


def test_bad_poll_requests_are_refused_and_change_nothing(env):
    stream = _poll_stream(env)
    env.api("POST", "/ssf/verify", json={"stream_id": stream["stream_id"]})
    for body in ({"maxEvents": -1}, {"returnImmediately": "yes"}, {"ack": "jti"}, {"setErrs": {"j": "x"}}):
        resp = _poll(env, stream, **body)
        assert resp.status_code == 400, body
        # RFC 8935 §2.3 / RFC 8936: the err/description error body.
        assert resp.json()["err"] == "invalid_request" and resp.json()["description"]
    # Another receiver's stream: 404; push streams have no poll endpoint.
    assert _poll(env, stream, token=env.token("other"), returnImmediately=True).status_code == 404
    push = env.push_stream()
    resp = requests.post(
        f"{env.url}/ssf/poll/{push['stream_id']}",
        json={},
        headers={"Authorization": f"Bearer {env.token()}"},
        timeout=10,
    )
    assert resp.status_code == 400
    with env.idp.provider.session_factory() as db:
        assert [
            e.state for e in db.scalars(select(SSFEvent).where(SSFEvent.stream_id == stream["stream_id"]))
        ] == ["queued"]
