"""A logout's own fan-out (issue 15 item 2): the termination's transaction claims its back-channel
rows for the process's dispatcher (a durable lease committed with the rows), and the attempts
start right after the commit, without the dispatcher's polling claim loop, in slots beyond the
steady-state ``delivery_concurrency``. Real OP, real loopback RPs, SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import select

from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.storage.models import Delivery, DeliveryAttempt
from oidc_logout.termination import by_sessions
from oidc_logout.testing import CapturedRequest, Reply
from tests.support.idp import Browser, authorize, introspect

from .conftest import RP_NAMES, Env, make_env


def _login_everywhere(env: Env) -> dict[str, dict[str, str]]:
    browser = Browser(env.idp.url)
    browser.login()
    return {name: authorize(browser, env.metas[name]) for name in RP_NAMES}


def _idle_dispatcher(env: Env, **settings: object) -> Dispatcher:
    """The OP's dispatcher, built but never started: no polling thread claims anything."""
    provider = env.idp.provider
    disp = Dispatcher(provider.session_factory, provider.keyring, provider.settings.replace(**settings))
    provider.dispatcher = disp
    return disp


def test_a_logout_reaches_every_rp_without_the_dispatchers_claim_loop(database_url: str) -> None:
    """The rows are claimed in the termination's own transaction and started by the request's
    process: with no polling thread at all, every RP still gets its logout token within the
    wait, and each row was attempted once, by this dispatcher. (Before: the logout only woke the
    polling thread, so without one nothing was sent and the wait ran out.)"""
    env = make_env(database_url, embedded_dispatcher=False)
    disp = _idle_dispatcher(env)
    try:
        tokens = _login_everywhere(env)
        sid = introspect(env.idp.url, env.metas["rp-a"], tokens["rp-a"]["access_token"])["sid"]
        out = env.idp.provider.terminate_now(
            by_sessions([sid]), reason="user logout", initiator="test", browser_present=True, wait=10
        )
        assert out.settled
        assert {name: len(env.rps.hits(f"/{name}")) for name in RP_NAMES} == dict.fromkeys(RP_NAMES, 1)
        with env.idp.provider.session_factory() as db:
            rows = db.scalars(select(Delivery).where(Delivery.id.in_(out.delivery_ids))).all()
            workers = set(
                db.scalars(
                    select(DeliveryAttempt.worker).where(DeliveryAttempt.delivery_id.in_(out.delivery_ids))
                )
            )
        assert {r.state for r in rows} == {"delivered"} and {r.attempts for r in rows} == {1}
        assert workers == {disp.owner}
    finally:
        disp.stop(timeout=5)
        env.idp.stop()
        env.rps.stop()


def test_the_tokens_are_dead_before_the_first_rp_hears_of_the_logout(database_url: str) -> None:
    """Claiming inside the termination's transaction does not let a POST out before the commit:
    when the first RP receives its logout token, the session's access tokens already
    introspect as inactive (asked while that RP holds its answer)."""
    env = make_env(database_url, embedded_dispatcher=False)
    disp = _idle_dispatcher(env)
    seen: dict[str, object] = {}
    first = threading.Lock()
    try:
        tokens = _login_everywhere(env)
        sid = introspect(env.idp.url, env.metas["rp-a"], tokens["rp-a"]["access_token"])["sid"]

        def at_first_post(_req: CapturedRequest) -> Reply:
            with first:
                if "active" not in seen:
                    seen["active"] = [
                        introspect(env.idp.url, env.metas[n], tokens[n]["access_token"])["active"]
                        for n in RP_NAMES
                    ]
            return Reply(200)

        for name in RP_NAMES:
            env.rps.script(f"/{name}", at_first_post)
        out = env.idp.provider.terminate_now(
            by_sessions([sid]), reason="user logout", initiator="test", browser_present=True, wait=10
        )
        assert out.settled
        assert seen["active"] == [False, False, False]
    finally:
        disp.stop(timeout=5)
        env.idp.stop()
        env.rps.stop()


def test_a_logout_without_burst_room_leaves_its_rows_to_the_claim_loop(database_url: str) -> None:
    """delivery_logout_burst = 0: nothing is claimed in the termination's transaction; the rows
    stay pending for the dispatcher's claim loop, which is woken and delivers them."""
    env = make_env(database_url, embedded_dispatcher=False)
    disp = _idle_dispatcher(env, delivery_logout_burst=0)
    try:
        tokens = _login_everywhere(env)
        sid = introspect(env.idp.url, env.metas["rp-a"], tokens["rp-a"]["access_token"])["sid"]
        out = env.idp.provider.terminate_now(
            by_sessions([sid]), reason="user logout", initiator="test", browser_present=True, wait=0
        )
        with env.idp.provider.session_factory() as db:
            states = set(db.scalars(select(Delivery.state).where(Delivery.id.in_(out.delivery_ids))))
        assert states == {"pending"}
        disp.start()
        assert disp.wait_for(out.delivery_ids, 10)
        assert {name: len(env.rps.hits(f"/{name}")) for name in RP_NAMES} == dict.fromkeys(RP_NAMES, 1)
    finally:
        disp.stop(timeout=5)
        env.idp.stop()
        env.rps.stop()
