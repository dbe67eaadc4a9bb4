"""One logout ends every RP session: logout tokens (Back-Channel Logout §2.4, §2.5), token
revocation right after the response (§2.7), bounded wait with a hanging RP."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import requests

from tests.delivery.conftest import Reply
from tests.support.idp import Browser, authorize, introspect, refresh

from .conftest import RP_NAMES, make_env

EVENT = "http://schemas.openid.net/event/backchannel-logout"


def _login_everywhere(env, scope="openid profile"):
    browser = Browser(env.idp.url)
    browser.login()
    tokens = {name: authorize(browser, env.metas[name], scope=scope) for name in RP_NAMES}
    return browser, tokens


def _end_session(browser, env, tokens, via="rp-a", **extra):
    params = {
        "id_token_hint": tokens[via]["id_token"],
        "client_id": via,
        "post_logout_redirect_uri": env.metas[via]["post_logout_redirect_uris"][0],
        "state": "st-42",
        **extra,
    }
    return browser.http.get(f"{env.idp.url}/end_session", params=params, allow_redirects=False, timeout=20)


def _sid(id_token: str) -> str:
    import base64
    import json

    payload = id_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]


def test_one_logout_delivers_a_valid_logout_token_to_every_rp(env):
    """§2.4/§2.5: each RP of the session gets a form-encoded logout token with every claim."""
    browser, tokens = _login_everywhere(env)
    resp = _end_session(browser, env, tokens)
    assert resp.status_code == 302
    q = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert resp.headers["Location"].startswith(env.metas["rp-a"]["post_logout_redirect_uris"][0])
    assert q["state"] == ["st-42"]
    sid = _sid(tokens["rp-a"]["id_token"])
    jtis = set()
    for name in RP_NAMES:
        received = env.logout_tokens(name)
        assert len(received) == 1, name
        tok = received[0]
        assert tok["content_type"].startswith("application/x-www-form-urlencoded")
        assert list(tok["form"]) == ["logout_token"]
        assert tok["header"]["typ"] == "logout+jwt"
        assert tok["header"]["alg"] == "RS256"
        assert tok["header"]["kid"]
        c = tok["claims"]
        assert c["iss"] == env.idp.url
        assert c["aud"] == name
        assert c["sub"] == "alice"
        assert c["sid"] == sid
        assert c["events"] == {EVENT: {}}
        assert "nonce" not in c
        assert c["iat"] <= time.time() + 1 and c["exp"] > c["iat"]
        jtis.add(c["jti"])
    assert len(jtis) == 3


def test_tokens_stop_working_as_soon_as_the_logout_response_arrives(env):
    """§2.7: refresh tokens of the session fail at once; access tokens are inactive at once."""
    browser, tokens = _login_everywhere(env)
    assert introspect(env.idp.url, env.metas["rp-b"], tokens["rp-b"]["access_token"])["active"]
    _end_session(browser, env, tokens)
    for name in RP_NAMES:
        meta = env.metas[name]
        assert introspect(env.idp.url, meta, tokens[name]["access_token"]) == {"active": False}
        assert introspect(env.idp.url, meta, tokens[name]["refresh_token"]) == {"active": False}
        r = refresh(env.idp.url, meta, tokens[name]["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_logged_out_browser_session_is_refused_at_authorize(env):
    """The OP session ended server-side: the old cookie leads back to the login form."""
    browser, tokens = _login_everywhere(env)
    _end_session(browser, env, tokens)
    meta = env.metas["rp-b"]
    resp = browser.http.get(
        f"{env.idp.url}/authorize",
        params={
            "response_type": "code",
            "client_id": "rp-b",
            "redirect_uri": meta["redirect_uris"][0],
            "scope": "openid",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_hanging_rp_delays_neither_other_rps_nor_the_logout_response(database_url):
    """A hanging RP costs the user at most the configured wait bound; the others are served."""
    env = make_env(
        database_url, replies={"rp-c": [Reply(hang=True)]}, logout_wait_bound=1.0, delivery_timeout=10.0
    )
    try:
        browser, tokens = _login_everywhere(env)
        started = time.monotonic()
        resp = _end_session(browser, env, tokens)
        elapsed = time.monotonic() - started
        assert resp.status_code == 302
        # The 1 s bound, not the hanging RP's 10 s delivery timeout (slack for a loaded CI machine).
        assert elapsed < 5.0, elapsed
        assert len(env.rps.hits("/rp-a")) == 1 and len(env.rps.hits("/rp-b")) == 1
        # Not queued behind the hanging RP: served well before its 10 s delivery timeout ends
        # (a bound on ordering, not a speed figure; generous for a loaded 2-core machine).
        assert env.rps.hits("/rp-a")[0].at - started < 5.0
    finally:
        env.idp.stop()
        env.rps.stop()


def test_rp_answering_500_then_200_gets_its_notification(database_url):
    """§2.8: a 5xx is recoverable; the retry delivers (with a fresh jti)."""
    env = make_env(database_url, replies={"rp-b": [Reply(500), Reply(200)]})
    try:
        browser, tokens = _login_everywhere(env)
        _end_session(browser, env, tokens)
        assert env.rps.wait_for(2, 10, path="/rp-b")
        received = env.logout_tokens("rp-b")
        assert len(received) == 2
        assert received[0]["claims"]["jti"] != received[1]["claims"]["jti"]
    finally:
        env.idp.stop()
        env.rps.stop()


def test_rp_answering_400_is_recorded_as_failed_without_retry(database_url):
    """§2.8: a 400 from the RP is a permanent failure with its error recorded."""
    env = make_env(
        database_url,
        replies={
            "rp-b": [
                Reply(
                    400,
                    {"Content-Type": "application/json"},
                    b'{"error":"invalid_request","error_description":"bad sid"}',
                )
            ]
        },
    )
    try:
        browser, tokens = _login_everywhere(env)
        _end_session(browser, env, tokens)
        from sqlalchemy import select

        from oidc_logout.storage.models import Delivery

        def rp_b_row():
            with env.idp.provider.session_factory() as db:
                return db.scalar(select(Delivery).where(Delivery.client_id == "rp-b"))

        # Wait for the row to settle instead of sleeping: "failed" is final (never claimed
        # again), so the one request rp-b got is all it will ever get.
        deadline = time.monotonic() + 10
        while rp_b_row().state in ("pending", "in_flight") and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition, bounded
        row = rp_b_row()
        assert row.state == "failed" and row.last_status == 400
        assert "bad sid" in (row.last_error or "")
        assert len(env.rps.hits("/rp-b")) == 1
    finally:
        env.idp.stop()
        env.rps.stop()


def test_discovery_and_registration_carry_backchannel_metadata(env):
    """§2.1/§2.2: discovery says so; registered clients keep their logout URI."""
    doc = requests.get(f"{env.idp.url}/.well-known/openid-configuration", timeout=5).json()
    assert doc["backchannel_logout_supported"] and doc["backchannel_logout_session_supported"]
