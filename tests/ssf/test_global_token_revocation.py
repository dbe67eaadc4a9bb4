"""Global Token Revocation (draft-parecki-oauth-global-token-revocation): a security tool
revokes everything of a subject through the one termination path; every RP of every channel
is told; answers 204 / 400 / 401 / 403 / 404 as §3.4 lists them."""

from __future__ import annotations

import requests
from sqlalchemy import select

from oidc_logout.ssf import SESSION_REVOKED
from oidc_logout.storage.models import Delivery, OPSession, Termination
from tests.support.idp import introspect

from .test_push import _ssf_rows, _wait_rows


def _gtr(env, body, client_id="tool", token=None):
    return env.api("POST", "/global-token-revocation", client_id, token=token, json=body)


def test_global_token_revocation_of_alice_ends_her_sessions_at_every_rp_of_every_channel(env):
    env.push_stream()
    browser, tokens = env.sign_in("alice", rps=("rp-a", "rp-f"))
    _bob_browser, t_bob = env.sign_in("bob", rps=("rp-a",))
    resp = _gtr(env, {"sub_id": {"format": "opaque", "id": "alice"}})
    assert resp.status_code == 204, resp.text  # §3.4.1
    # Back-channel logout: rp-a told (one logout token, alice's).
    assert env.rx.wait_for(1, timeout=15, path="/rp-a/backchannel")
    # SSF: a session-revoked SET, initiated by an administrative tool.
    assert env.rx.wait_for(1, timeout=15, path="/events")
    [(_hit, tok)] = env.pushed()
    assert tok.claims["sub_id"]["sub"] == "alice"
    assert tok.claims["events"][SESSION_REVOKED]["initiating_entity"] == "admin"
    # §3.3: "MUST revoke all active refresh tokens", "SHOULD invalidate all access tokens".
    for name in ("rp-a", "rp-f"):
        assert introspect(env.url, env.metas[name], tokens[name]["refresh_token"])["active"] is False
        assert introspect(env.url, env.metas[name], tokens[name]["access_token"])["active"] is False
    # Bob is untouched.
    assert introspect(env.url, env.metas["rp-a"], t_bob["rp-a"]["refresh_token"])["active"] is True
    with env.idp.provider.session_factory() as db:
        live = {s.subject for s in db.scalars(select(OPSession).where(OPSession.ended_at.is_(None)))}
        assert live == {"bob"}
        term = db.scalar(select(Termination).where(Termination.initiator == "global_token_revocation:tool"))
        assert term is not None and term.sessions_ended == 1
        channels = {d.channel for d in db.scalars(select(Delivery).where(Delivery.termination_id == term.id))}
    # Front-channel too (recorded as not confirmable: no browser took part).
    assert channels == {"backchannel", "frontchannel", "ssf_push"}
    assert _wait_rows(env, lambda rows: rows[0].state == "delivered")[0].state == "delivered"
    # §3.3: "MUST re-authenticate the user": her browser's OP session is gone.
    resp = browser.http.get(f"{env.url}/account", allow_redirects=False, timeout=10)
    assert resp.status_code in (302, 303)


def test_refresh_tokens_that_outlived_their_session_are_revoked_too(env):
    """Offline refresh tokens survive a logout (Back-Channel §2.7); GTR §3.3 revokes them."""
    _browser, tokens = env.sign_in("alice")
    with env.idp.provider.session_factory() as db:
        sid = db.scalar(select(OPSession.sid).where(OPSession.subject == "alice"))
    assert (
        env.api("POST", "/admin/terminations", "admin", json={"sid": sid, "reason": "logout"}).status_code
        == 201
    )
    assert introspect(env.url, env.metas["rp-a"], tokens["rp-a"]["refresh_token"])["active"] is True
    assert _gtr(env, {"sub_id": {"format": "iss_sub", "iss": env.url, "sub": "alice"}}).status_code == 204
    assert introspect(env.url, env.metas["rp-a"], tokens["rp-a"]["refresh_token"])["active"] is False


def test_bad_requests_get_the_drafts_codes_and_change_nothing(env):
    _browser, tokens = env.sign_in("alice")
    cases = [
        ({"sub_id": {"format": "phone_number", "phone_number": "+12065550100"}}, 400),  # unsupported
        ({"sub_id": {"format": "opaque"}}, 400),  # malformed
        ({"subject": "alice"}, 400),
        ({"sub_id": {"format": "email", "email": "alice@example.org"}}, 400),  # directory cannot map
        ({"sub_id": {"format": "opaque", "id": "mallory"}}, 404),  # §3.4 404 User Not Found
        ({"sub_id": {"format": "iss_sub", "iss": "https://elsewhere.example", "sub": "alice"}}, 404),
    ]
    for body, status in cases:
        resp = _gtr(env, body)
        assert resp.status_code == status, (body, resp.text)
        assert resp.json()["error"]
    body = {"sub_id": {"format": "opaque", "id": "alice"}}
    # §3.4: 401 invalid authentication, 403 insufficient authorization (scope).
    assert requests.post(f"{env.url}/global-token-revocation", json=body, timeout=10).status_code == 401
    assert _gtr(env, body, token="not-a-token").status_code == 401
    assert _gtr(env, body, client_id="receiver").status_code == 403
    assert (
        env.api(
            "POST", "/global-token-revocation", "tool", data="x", headers={"Content-Type": "text/plain"}
        ).status_code
        == 400
    )
    assert introspect(env.url, env.metas["rp-a"], tokens["rp-a"]["refresh_token"])["active"] is True
    assert _ssf_rows(env) == []
    with env.idp.provider.session_factory() as db:
        assert db.scalar(select(Termination.id).where(Termination.initiator.like("global_token%"))) is None
