"""Signing in over a live OP session: nothing of the earlier session stays reachable, and the
host's authentication facts (auth_time, amr, acr) reach the ID token (Core 1.0 §2)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import redirect, request
from sqlalchemy import func, select

from oidc_logout.config import Settings
from oidc_logout.demo.idp import create_idp_app
from oidc_logout.flask import OIDCLogout
from oidc_logout.storage.models import OPSession, Termination
from tests.support.idp import PASSWORD, Browser, IdP, authorize, client_meta, introspect, pkce_pair
from tests.support.servers import LiveServer

from .conftest import Env


def _claims(id_token: str) -> dict:  # type: ignore[type-arg]
    p = id_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))  # type: ignore[no-any-return]


def _live_sessions(env: Env, subject: str) -> int:
    with env.idp.provider.session_factory() as db:
        return int(
            db.scalar(
                select(func.count())
                .select_from(OPSession)
                .where(OPSession.subject == subject, OPSession.ended_at.is_(None))
            )
            or 0
        )


def test_signing_in_as_another_user_ends_the_earlier_session_everywhere(env):
    """Bob signing in on alice's browser ends alice's session through one termination: her
    tokens die and her RPs are told; the browser holds only bob's session."""
    browser = Browser(env.idp.url)
    browser.login("alice")
    alice = authorize(browser, env.metas["rp-a"])
    assert browser.login("bob").status_code == 303
    assert introspect(env.idp.url, env.metas["rp-a"], alice["access_token"]) == {"active": False}
    assert env.rps.wait_for(1, 10, path="/rp-a")
    assert _live_sessions(env, "alice") == 0 and _live_sessions(env, "bob") == 1
    with env.idp.provider.session_factory() as db:
        term = db.scalar(select(Termination))
        assert term is not None and term.reason == "another End-User signed in"
    bob = authorize(browser, env.metas["rp-b"])
    assert _claims(bob["id_token"])["sub"] == "bob"


def test_signing_in_again_as_the_same_user_keeps_one_session_that_sign_out_ends(env):
    """The same user signing in again renews the session (same sid, fresh cookie): the earlier
    RP logins stay bound to it, so one sign-out ends them all."""
    browser = Browser(env.idp.url)
    browser.login("alice")
    first = authorize(browser, env.metas["rp-a"])
    old_cookie = browser.http.cookies.get(env.idp.settings.session_cookie_name)
    browser.login("alice")
    assert browser.http.cookies.get(env.idp.settings.session_cookie_name) != old_cookie
    second = authorize(browser, env.metas["rp-b"])
    assert _claims(first["id_token"])["sid"] == _claims(second["id_token"])["sid"]
    assert _live_sessions(env, "alice") == 1
    resp = browser.http.get(
        f"{env.idp.url}/end_session",
        params={"id_token_hint": second["id_token"]},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 200
    assert introspect(env.idp.url, env.metas["rp-a"], first["access_token"]) == {"active": False}
    assert _live_sessions(env, "alice") == 0


@pytest.fixture
def host_idp(sqlite_url: str) -> Iterator[IdP]:
    """An IdP whose host app signs users in with its own (MFA) login view."""
    server = LiveServer()
    settings = Settings(issuer=server.url, database_url=sqlite_url, dev_mode=True, expiry_sweep_interval=0)
    app = create_idp_app(settings, password=PASSWORD, clients=[client_meta("mfa-rp")])

    @app.post("/my-login")
    def my_login():  # type: ignore[no-untyped-def]
        resp = redirect(request.form.get("next") or "/account", 303)
        OIDCLogout.sign_in(
            resp,
            request.form["user"],
            amr=["pwd", "otp"],
            acr="urn:example:mfa",
            auth_time=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        )
        return resp

    server.app = app
    server.start()
    idp = IdP(server, app, settings)
    yield idp
    idp.stop()


def test_host_login_facts_reach_the_id_token(host_idp):
    """Core 1.0 §2: auth_time, amr and acr of the host's own login are in the ID token."""
    browser = Browser(host_idp.url)
    resp = browser.http.post(
        f"{host_idp.url}/my-login", data={"user": "alice"}, allow_redirects=False, timeout=10
    )
    assert resp.status_code == 303
    tokens = authorize(browser, client_meta("mfa-rp"))
    claims = _claims(tokens["id_token"])
    assert claims["amr"] == ["pwd", "otp"]
    assert claims["acr"] == "urn:example:mfa"
    assert claims["auth_time"] == int(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp())


def test_host_login_with_malformed_amr_is_refused_and_starts_no_session(host_idp):
    """A host bug (amr as a bare string) is an error, not a session with garbage claims."""
    app = host_idp.app
    with app.test_request_context("/"), pytest.raises(Exception) as info:
        OIDCLogout.sign_in(redirect("/"), "alice", amr="pwd")  # type: ignore[arg-type]
    assert "amr" in str(info.value)
    with host_idp.provider.session_factory() as db:
        assert db.scalar(select(func.count()).select_from(OPSession)) == 0


def test_authorize_sends_a_signed_out_user_to_the_hosts_login_url(sqlite_url: str) -> None:
    """OIDC_LOGOUT_LOGIN_URL: the host's login page (with ``next``) instead of the bundled form;
    after the host's login calls sign_in, the returned-to request issues a code."""
    server = LiveServer()
    settings = Settings(
        issuer=server.url,
        database_url=sqlite_url,
        dev_mode=True,
        expiry_sweep_interval=0,
        login_url="/my-login?theme=dark",
    )
    rp = client_meta("host-login-rp")
    app = create_idp_app(settings, password=PASSWORD, clients=[rp])

    @app.get("/my-login")
    def my_login():  # type: ignore[no-untyped-def]
        resp = redirect(request.args["next"], 303)
        OIDCLogout.sign_in(resp, "alice", amr=["hwk"])
        return resp

    server.app = app
    server.start()
    idp = IdP(server, app, settings)
    try:
        browser = Browser(idp.url)
        _, challenge = pkce_pair()
        params = {
            "response_type": "code",
            "client_id": rp["client_id"],
            "scope": "openid",
            "redirect_uri": rp["redirect_uris"][0],
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        sent = browser.http.get(f"{idp.url}/authorize", params=params, allow_redirects=False, timeout=10)
        assert sent.status_code == 302
        location = urlsplit(sent.headers["Location"])
        assert location.path == "/my-login" and parse_qs(location.query)["theme"] == ["dark"]
        signed_in = browser.http.get(idp.url + sent.headers["Location"], allow_redirects=False, timeout=10)
        assert signed_in.status_code == 303
        back = browser.http.get(idp.url + signed_in.headers["Location"], allow_redirects=False, timeout=10)
        assert back.status_code == 302
        assert back.headers["Location"].startswith(rp["redirect_uris"][0])
        assert "code" in parse_qs(urlsplit(back.headers["Location"]).query)
    finally:
        idp.stop()
