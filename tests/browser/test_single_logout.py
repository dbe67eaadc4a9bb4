"""Single logout in a real browser: one sign-in at the OP, three RPs, one logout ends them all.

RPs: back-channel only, front-channel only, and both. The OP renders the front-channel page
(Front-Channel Logout 1.0 §3) and delivers logout tokens (Back-Channel Logout 1.0 §2.5); the
tests look at what a person sees, at the RPs' servers, and at the OP's termination record.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.storage.models import OPSession

from .conftest import (
    RP,
    SCREENSHOT_DIR,
    Env,
    asks_for_login,
    cookie_value,
    new_rp,
    protected_with_cookie,
    query_of,
    screenshot,
    sign_in,
)

pytestmark = pytest.mark.browser

BACK, FRONT = "/oidc/backchannel-logout", "/oidc/frontchannel-logout"


def three_rps() -> list[RP]:
    return [
        new_rp("Notes", "rp-back", back=True, front=False),
        new_rp("Wiki", "rp-front", back=False, front=True),
        new_rp("Files", "rp-both", back=True, front=True),
    ]


def sign_in_everywhere(page: Any, env: Env) -> dict[str, str]:
    """Sign in at every RP (the first asks for the password, the others reuse the OP session);
    returns each RP's session cookie, proven to work from outside the browser."""
    cookies = {}
    for i, rp in enumerate(env.rps.values()):
        sign_in(page, rp, env.idp, expect_login_form=(i == 0))
    for rp in env.rps.values():
        cookies[rp.client_id] = cookie_value(page, rp)
        resp = protected_with_cookie(rp, cookies[rp.client_id])
        assert resp.status_code == 200 and "Secret page of" in resp.text, resp.text
    with env.idp.provider.session_factory() as db:
        assert len(db.scalars(select(OPSession)).all()) == 1, "one OP session for all three RPs"
    return cookies


def log_out_at(page: Any, rp: RP, env: Env, op_page_shot: str | None = None) -> tuple[str, float]:
    """Click "Sign out everywhere" at ``rp``; wait for its /logged-out page. Returns the state
    the RP sent to end_session and the seconds from click to arrival. ``op_page_shot``: save a
    screenshot of the OP's logged-out page under that name on the way (if screenshots are on)."""
    sent: list[str] = []
    page.on(
        "request", lambda r: sent.append(r.url) if r.url.startswith(f"{env.idp.url}/end_session") else None
    )
    page.goto(f"{rp.url}/")
    started = time.monotonic()
    page.click("#logout")
    if op_page_shot and SCREENSHOT_DIR:
        page.wait_for_url(f"{env.idp.url}/end_session?**", wait_until="domcontentloaded")
        screenshot(page, op_page_shot)
    page.wait_for_url(f"{rp.url}/logged-out?**", wait_until="domcontentloaded")
    elapsed = time.monotonic() - started
    assert len(sent) == 1, sent
    state = query_of(sent[0])["state"][0]
    assert query_of(page.url)["state"] == [state]
    assert page.inner_text("#state") == state
    return state, elapsed


def assert_signed_out_everywhere(page: Any, env: Env, cookies: dict[str, str]) -> None:
    for rp in env.rps.values():
        resp = protected_with_cookie(rp, cookies[rp.client_id])
        assert resp.status_code == 302, (rp.client_id, resp.status_code, resp.text)
        assert resp.headers["Location"].startswith("/login"), resp.headers["Location"]
        asks_for_login(page, rp, env.idp)


def test_one_logout_ends_every_rp_session(new_page, env_factory):
    env = env_factory(three_rps())
    page = new_page()
    cookies = sign_in_everywhere(page, env)

    log_out_at(page, env.rps["rp-back"], env)
    screenshot(page, "rp-after-logout.png")

    rows = env.wait_deliveries(
        {
            ("rp-back", "backchannel"): "delivered",
            ("rp-both", "backchannel"): "delivered",
            ("rp-front", "frontchannel"): "confirmed",
            ("rp-both", "frontchannel"): "confirmed",
        }
    )
    assert {k: r.state for k, r in rows.items()} == {
        ("rp-back", "backchannel"): "delivered",
        ("rp-both", "backchannel"): "delivered",
        ("rp-front", "frontchannel"): "confirmed",
        ("rp-both", "frontchannel"): "confirmed",
    }
    assert rows[("rp-both", "backchannel")].last_status == 200

    # Front-Channel §2/§3: each front-channel RP was called with iss and sid of the session.
    with env.idp.provider.session_factory() as db:
        sid = db.scalars(select(OPSession.sid)).one()
    for cid in ("rp-front", "rp-both"):
        (hit,) = env.rps[cid].hits_on(FRONT)
        assert hit.query == {"iss": [env.idp.url], "sid": [sid]} and hit.status == 200
    assert env.rps["rp-front"].ended == [(FRONT, env.rps["rp-front"].ended[0][1])]
    assert env.rps["rp-back"].hits_on(FRONT) == []
    # The initiating RP ended its own session before redirecting; the logout token that
    # follows finds nothing and is still answered 200 (Back-Channel §2.8).
    assert [h.status for h in env.rps["rp-back"].hits_on(BACK)] == [200]

    assert_signed_out_everywhere(page, env, cookies)


def test_rp_with_both_channels_ends_its_session_once(new_page, env_factory):
    """Back-channel first (the OP waits for it before rendering the page), then the iframe:
    the second request finds no session and is a harmless 200."""
    env = env_factory(three_rps())
    page = new_page()
    cookies = sign_in_everywhere(page, env)
    log_out_at(page, env.rps["rp-front"], env)

    both = env.rps["rp-both"]
    env.wait_deliveries({("rp-both", "frontchannel"): "confirmed"})
    assert [(h.method, h.path, h.status) for h in both.hits] == [("POST", BACK, 200), ("GET", FRONT, 200)]
    assert [path for path, _ in both.ended] == [BACK], "ended once, by the back channel"
    assert protected_with_cookie(both, cookies["rp-both"]).status_code == 302


def test_both_channels_front_first_then_back_is_a_noop(new_page, env_factory):
    """The other order: no dispatcher runs while the page renders, so the iframe ends the
    session; the logout token delivered afterwards finds nothing and still gets 200."""
    env = env_factory(three_rps(), embedded_dispatcher=False)
    page = new_page()
    cookies = sign_in_everywhere(page, env)
    log_out_at(page, env.rps["rp-front"], env)

    both = env.rps["rp-both"]
    env.wait_deliveries({("rp-both", "frontchannel"): "confirmed"})
    assert [(h.path, h.status) for h in both.hits] == [(FRONT, 200)]
    assert [path for path, _ in both.ended] == [FRONT]
    assert protected_with_cookie(both, cookies["rp-both"]).status_code == 302

    provider = env.idp.provider
    dispatcher = Dispatcher(provider.session_factory, provider.keyring, provider.settings)
    try:
        assert dispatcher.run_once(timeout=5).get("delivered") == 2  # rp-back and rp-both
    finally:
        dispatcher.stop(2)
    rows = env.deliveries()
    assert rows[("rp-both", "backchannel")].state == "delivered"
    assert rows[("rp-both", "backchannel")].last_status == 200
    assert [(h.path, h.status) for h in both.hits] == [(FRONT, 200), (BACK, 200)]
    assert [path for path, _ in both.ended] == [FRONT], "the logout token ended nothing more"
    assert_signed_out_everywhere(page, env, cookies)


def test_hanging_frontchannel_rp_does_not_block_the_redirect(new_page, env_factory):
    """An RP that accepts the iframe request and never answers: the page gives up after
    frontchannel_timeout_ms, records it unconfirmed, and redirects anyway."""
    timeout_ms = 1500
    hang = new_rp("Hangs", "rp-hang", back=False, front=True, hang=True)
    env = env_factory(
        [new_rp("Wiki", "rp-front", back=False, front=True), hang], frontchannel_timeout_ms=timeout_ms
    )
    page = new_page()
    sign_in(page, env.rps["rp-front"], env.idp, expect_login_form=True)
    sign_in(page, hang, env.idp, expect_login_form=False)
    cookies = {rp.client_id: cookie_value(page, rp) for rp in env.rps.values()}

    # The screenshot catches the OP's page while it waits for the hung iframe.
    _, elapsed = log_out_at(page, env.rps["rp-front"], env, op_page_shot="logged-out-page.png")

    # It waited for the hung iframe (the timer starts when the page runs) but not much longer.
    assert timeout_ms / 1000 <= elapsed < timeout_ms / 1000 + 2.5, elapsed
    rows = env.wait_deliveries(
        {("rp-front", "frontchannel"): "confirmed", ("rp-hang", "frontchannel"): "unconfirmed"}
    )
    assert rows[("rp-front", "frontchannel")].state == "confirmed"
    assert rows[("rp-hang", "frontchannel")].state == "unconfirmed"
    assert "did not report loading" in (rows[("rp-hang", "frontchannel")].last_error or "")
    assert len(hang.hits_on(FRONT)) == 1, "the hung RP was asked (and never answered)"
    # The hung RP's session survives: front-channel is best effort. Its termination record
    # says so; the responsive RP is signed out.
    assert protected_with_cookie(hang, cookies["rp-hang"]).status_code == 200
    assert protected_with_cookie(env.rps["rp-front"], cookies["rp-front"]).status_code == 302


def test_logged_out_page_works_without_javascript(new_page, env_factory):
    """No script: the <noscript> meta refresh performs the redirect, and the iframes still
    load, so the front-channel RPs' sessions end."""
    env = env_factory(three_rps(), frontchannel_timeout_ms=1000)
    page = new_page(java_script_enabled=False)
    cookies = sign_in_everywhere(page, env)

    _, elapsed = log_out_at(page, env.rps["rp-back"], env, op_page_shot="logged-out-page-nojs.png")
    # refresh_seconds = timeout_ms // 1000 + 1 = 2 s after the page arrived.
    assert 1.5 <= elapsed < 2 + 3.5, elapsed
    for cid in ("rp-front", "rp-both"):
        assert [h.status for h in env.rps[cid].hits_on(FRONT)] == [200], cid
    assert [p for p, _ in env.rps["rp-front"].ended] == [FRONT]
    assert_signed_out_everywhere(page, env, cookies)
    # Without script nobody reports which iframes loaded: the rows are never "confirmed".
    rows = env.deliveries()
    assert rows[("rp-front", "frontchannel")].state != "confirmed"
    assert rows[("rp-back", "backchannel")].state == "delivered"
