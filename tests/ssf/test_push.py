"""Push delivery (RFC 8935) of SETs through the outbox: a real logout at the OP reaches a real
loopback receiver; every MUST of RFC 8417, RFC 8935, SSF 1.0 and CAEP 1.0 checked on the SET
with joserfc; retries, RFC 8935 error codes, paused / disabled streams, subjects."""

from __future__ import annotations

import json
import time

from sqlalchemy import select

from oidc_logout.ssf import CREDENTIAL_CHANGE, SESSION_REVOKED, VERIFICATION
from oidc_logout.storage.models import Delivery, SSFEvent
from oidc_logout.testing import Reply
from oidc_logout.vocabulary import Channel

from .conftest import make_env


def _end_session(env, browser, tokens, via="rp-a"):
    params = {
        "id_token_hint": tokens[via]["id_token"],
        "client_id": via,
        "post_logout_redirect_uri": env.metas[via]["post_logout_redirect_uris"][0],
    }
    resp = browser.http.get(f"{env.url}/end_session", params=params, allow_redirects=False, timeout=30)
    assert resp.status_code in (200, 302), resp.text
    return resp


def _ssf_rows(env):
    with env.idp.provider.session_factory() as db:
        return list(
            db.scalars(select(Delivery).where(Delivery.channel == Channel.SSF_PUSH).order_by(Delivery.id))
        )


def _wait_rows(env, pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _ssf_rows(env)
        if rows and pred(rows):
            return rows
        time.sleep(0.1)
    return _ssf_rows(env)


def test_a_logout_at_the_op_pushes_a_session_revoked_set_that_meets_every_must(env):
    stream = env.push_stream()
    browser, tokens = env.sign_in("alice")
    _end_session(env, browser, tokens)
    assert env.rx.wait_for(1, timeout=15, path="/events")
    [(hit, tok)] = env.pushed()
    # RFC 8935 §2.1: an HTTP POST whose body is the SET, Content-Type application/secevent+jwt,
    # Accept application/json.
    assert hit.method == "POST"
    assert hit.header("Content-Type") == "application/secevent+jwt"
    assert hit.header("Accept") == "application/json"
    # SSF §6.1.1: authorization_header, if present, "MUST [be provided] with every HTTP request".
    assert hit.header("Authorization") == "Bearer rx-secret-1"
    # RFC 8417 §2.3 / SSF §4.1.1: explicitly typed "secevent+jwt"; CAEP Interop §2.6: RS256.
    assert tok.header["typ"] == "secevent+jwt"
    assert tok.header["alg"] == "RS256"  # joserfc verified the signature against the JWKS
    claims = tok.claims
    # RFC 8417 §2.2: iss, iat, jti REQUIRED; SSF §4.1.5: iss = the stream's iss (= metadata issuer).
    assert claims["iss"] == stream["iss"] == env.url
    assert isinstance(claims["iat"], int) and abs(claims["iat"] - time.time()) < 120
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    # SSF §4.1.7: aud identifies the receiver of the stream.
    assert claims["aud"] == stream["aud"]
    # SSF §4.1.2: "The JWT sub claim MUST NOT be present"; §4.1.6: "exp MUST NOT be used".
    assert "sub" not in claims and "exp" not in claims
    # SSF §3.1: top-level sub_id (RFC 9493 §3.2.3 iss_sub, CAEP Interop §2.5).
    assert claims["sub_id"] == {"format": "iss_sub", "iss": env.url, "sub": "alice"}
    # RFC 8417 §2.2 events REQUIRED; CAEP Interop §2.8.1: exactly one event.
    assert list(claims["events"]) == [SESSION_REVOKED]
    event = claims["events"][SESSION_REVOKED]
    # CAEP §2: event_timestamp a number of seconds; initiating_entity one of four words.
    assert isinstance(event["event_timestamp"], int) and event["event_timestamp"] <= claims["iat"] + 1
    assert event["initiating_entity"] == "user"
    # CAEP Interop §4.1: reason_admin MUST be populated with a non-empty value (BCP47 keys, CAEP §2).
    assert event["reason_admin"]["en"]
    # SSF §4.1.8: txn SHOULD be set.
    assert claims["txn"]
    # The outbox row: delivered, with its attempt on record (jti = the SET's).
    rows = _wait_rows(env, lambda rows: rows[0].state == "delivered")
    assert [r.state for r in rows] == ["delivered"]
    with env.idp.provider.session_factory() as db:
        row = db.get(Delivery, rows[0].id)
        assert [(a.http_status, a.outcome, a.jti) for a in row.attempt_log] == [
            (202, "delivered", claims["jti"])
        ]


def test_a_receiver_down_then_up_gets_the_same_set(env):
    """RFC 8935 §2.3 5xx is transient; RFC 8417 §2.2: a retransmission is the same SET (same jti)."""
    env.push_stream("/events", Reply(503), Reply(503), Reply(202))
    browser, tokens = env.sign_in("alice")
    _end_session(env, browser, tokens)
    assert env.rx.wait_for(3, timeout=20, path="/events")
    jtis = {tok.claims["jti"] for _hit, tok in env.pushed()}
    assert len(jtis) == 1
    rows = _wait_rows(env, lambda rows: rows[0].state == "delivered")
    assert rows[0].state == "delivered" and rows[0].attempts == 3


def test_rfc8935_error_codes_fail_permanently_except_invalid_key(sqlite_url):
    env = make_env(sqlite_url, delivery_key_retry_delay=0.05)
    try:
        env.push_stream(
            "/audience",
            Reply(
                400,
                {"Content-Type": "application/json"},
                json.dumps({"err": "invalid_audience", "description": "not us"}).encode(),
            ),
        )
        env.push_stream(
            "/key",
            Reply(400, {"Content-Type": "application/json"}, b'{"err": "invalid_key"}'),
            Reply(202),
            client_id="other",
        )
        browser, tokens = env.sign_in("alice")
        _end_session(env, browser, tokens)
        assert env.rx.wait_for(2, timeout=15, path="/key")
        rows = _wait_rows(
            env, lambda rows: len(rows) == 2 and all(r.state in ("delivered", "failed") for r in rows)
        )
        by_client = {r.client_id: r for r in rows}
        # §2.4 invalid_audience: resending the same SET cannot succeed -> failed, error kept.
        assert by_client["receiver"].state == "failed"
        assert "invalid_audience" in by_client["receiver"].last_error
        assert env.rx.count("/audience") == 1
        # §2.4 invalid_key: the receiver's keys lag a rotation -> retried, then delivered.
        assert by_client["other"].state == "delivered" and by_client["other"].attempts == 2
    finally:
        env.idp.stop()
        env.rx.stop()


def test_a_paused_stream_holds_events_and_delivers_them_when_enabled(env):
    """SSF §8.1.2: paused - MUST NOT transmit, SHOULD hold and transmit when enabled."""
    sid = env.push_stream()["stream_id"]
    assert env.api("POST", "/ssf/status", json={"stream_id": sid, "status": "paused"}).status_code == 200
    browser, tokens = env.sign_in("alice")
    _end_session(env, browser, tokens)
    # Positive control: the back-channel RP of the same logout was told.
    assert env.rx.wait_for(1, timeout=15, path="/rp-a/backchannel")
    with env.idp.provider.session_factory() as db:
        assert [e.state for e in db.scalars(select(SSFEvent))] == ["held"]
    assert env.rx.count("/events") == 0
    assert env.api("POST", "/ssf/status", json={"stream_id": sid, "status": "enabled"}).status_code == 200
    assert env.rx.wait_for(1, timeout=15, path="/events")
    [(_hit, tok)] = env.pushed()
    assert list(tok.claims["events"]) == [SESSION_REVOKED]


def test_a_disabled_stream_holds_nothing(env):
    """SSF §8.1.2: disabled - MUST NOT transmit and "will not hold any events"."""
    sid = env.push_stream()["stream_id"]
    env.api("POST", "/ssf/status", json={"stream_id": sid, "status": "disabled"})
    browser, tokens = env.sign_in("alice")
    _end_session(env, browser, tokens)
    assert env.rx.wait_for(1, timeout=15, path="/rp-a/backchannel")
    env.api("POST", "/ssf/status", json={"stream_id": sid, "status": "enabled"})
    # Positive control after re-enabling: a verification event arrives, and it is the only SET.
    assert env.api("POST", "/ssf/verify", json={"stream_id": sid, "state": "s1"}).status_code == 204
    assert env.rx.wait_for(1, timeout=15, path="/events")
    time.sleep(0.5)
    assert [list(tok.claims["events"]) for _h, tok in env.pushed()] == [[VERIFICATION]]


def test_verification_pushes_a_set_with_the_state_and_the_stream_as_subject(env):
    sid = env.push_stream()["stream_id"]
    resp = env.api("POST", "/ssf/verify", json={"stream_id": sid, "state": "VGhpcyBpcyBzdGF0ZQ"})
    assert resp.status_code == 204  # SSF §8.1.4.2
    assert env.rx.wait_for(1, timeout=15, path="/events")
    [(_hit, tok)] = env.pushed()
    # SSF §8.1.4.1: sub_id is opaque with the stream_id; state echoed.
    assert tok.claims["sub_id"] == {"format": "opaque", "id": sid}
    assert tok.claims["events"] == {VERIFICATION: {"state": "VGhpcyBpcyBzdGF0ZQ"}}


def test_verification_more_often_than_the_minimum_interval_is_429(sqlite_url):
    """SSF §8.1.1 min_verification_interval: faster requests MAY get 429."""
    env = make_env(sqlite_url, ssf_min_verification_interval=60)
    try:
        sid = env.push_stream()["stream_id"]
        assert env.api("POST", "/ssf/verify", json={"stream_id": sid}).status_code == 204
        resp = env.api("POST", "/ssf/verify", json={"stream_id": sid})
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    finally:
        env.idp.stop()
        env.rx.stop()


def test_a_removed_subject_gets_no_events_and_others_still_do(env):
    """SSF §8.1.3.3 with default_subjects ALL: removing a subject stops its events."""
    sid = env.push_stream()["stream_id"]
    alice = {"format": "iss_sub", "iss": env.url, "sub": "alice"}
    assert (
        env.api("POST", "/ssf/subjects:remove", json={"stream_id": sid, "subject": alice}).status_code == 204
    )
    b_alice, t_alice = env.sign_in("alice")
    _end_session(env, b_alice, t_alice)
    b_bob, t_bob = env.sign_in("bob")
    _end_session(env, b_bob, t_bob)
    assert env.rx.wait_for(1, timeout=15, path="/events")
    time.sleep(0.5)
    assert [tok.claims["sub_id"]["sub"] for _h, tok in env.pushed()] == ["bob"]


def test_rotating_a_client_secret_pushes_a_credential_change(env):
    """CAEP §3.3 credential-change; CAEP Interop §4.2: reason_admin non-empty."""
    env.push_stream()
    resp = env.api("POST", "/admin/clients/rp-a/rotate-secret", "admin", json={"end_previous": False})
    assert resp.status_code == 200, resp.text
    assert env.rx.wait_for(1, timeout=15, path="/events")
    [(_hit, tok)] = env.pushed()
    assert tok.claims["sub_id"] == {"format": "iss_sub", "iss": env.url, "sub": "rp-a"}
    event = tok.claims["events"][CREDENTIAL_CHANGE]
    assert event["credential_type"] == "client_secret" and event["change_type"] == "update"
    assert event["reason_admin"]["en"] and event["initiating_entity"] == "admin"


def test_a_user_the_directory_no_longer_has_is_announced_as_account_disabled_once(env):
    """RISC account-disabled when the user directory says the account is gone (the token
    endpoint asks it on every refresh); recorded once per subject and stream."""
    from oidc_logout.ssf import ACCOUNT_DISABLED
    from tests.support.idp import refresh

    env.push_stream()
    _browser, tokens = env.sign_in("bob")
    del env.idp.provider.users._users["bob"]
    for _ in range(2):
        resp = refresh(env.url, env.metas["rp-a"], tokens["rp-a"]["refresh_token"])
        assert resp.status_code == 400  # refused as before (Authlib: invalid_request)
    assert env.rx.wait_for(1, timeout=15, path="/events")
    time.sleep(0.5)
    [(_hit, tok)] = env.pushed()
    assert tok.claims["events"] == {ACCOUNT_DISABLED: {}}
    assert tok.claims["sub_id"] == {"format": "iss_sub", "iss": env.url, "sub": "bob"}


def test_a_stream_asking_for_email_subjects_gets_the_directorys_address(env):
    """RFC 9493 §3.2.2 email format (CAEP Interop §2.5), from the user directory."""
    env.push_stream(subject_format="email")
    browser, tokens = env.sign_in("alice")
    _end_session(env, browser, tokens)
    assert env.rx.wait_for(1, timeout=15, path="/events")
    [(_hit, tok)] = env.pushed()
    assert tok.claims["sub_id"] == {"format": "email", "email": "alice@example.org"}


def test_rotating_the_signing_key_pushes_a_credential_change_of_the_op(env):
    from oidc_logout.cli import main

    env.push_stream()
    assert main(["rotate-key", "--database-url", env.idp.settings.database_url, "--publish-for", "600"]) == 0
    assert env.rx.wait_for(1, timeout=15, path="/events")
    [(_hit, tok)] = env.pushed()
    assert tok.claims["sub_id"] == {"format": "uri", "uri": env.url}
    event = tok.claims["events"][CREDENTIAL_CHANGE]
    assert (event["credential_type"], event["change_type"]) == ("jwk", "create")
    assert event["reason_admin"]["en"] and event["initiating_entity"] == "admin"
