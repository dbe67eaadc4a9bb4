"""Front-channel rows come from the same termination and never stay pending forever."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from oidc_logout.storage.models import Delivery
from oidc_logout.termination import by_subject
from tests.support.idp import Browser, authorize, client_meta

from .conftest import make_env


def _front_env(database_url):
    front = client_meta(
        "rp-front",
        port=20100,
        frontchannel_logout_uri="http://127.0.0.1:20100/fc?x=1",
        frontchannel_logout_session_required=True,
    )
    return make_env(database_url, extra_clients=[front]), front


def _rows(env):
    with env.idp.provider.session_factory() as db:
        return {d.client_id: (d.channel, d.state) for d in db.scalars(select(Delivery))}


def test_browserless_termination_records_frontchannel_rps_as_unconfirmed(database_url):
    """Without a user agent (admin, CLI, expiry) front-channel RPs cannot be reached: say so."""
    env, front = _front_env(database_url)
    try:
        browser = Browser(env.idp.url)
        browser.login()
        authorize(browser, front)
        authorize(browser, env.metas["rp-a"])
        env.idp.provider.terminate_now(by_subject("alice"), reason="admin", initiator="test", wait=3)
        rows = _rows(env)
        assert rows["rp-front"] == ("frontchannel", "unconfirmed")
        assert rows["rp-a"] == ("backchannel", "delivered")
    finally:
        env.idp.stop()
        env.rps.stop()


def test_frontchannel_rows_without_a_browser_report_settle_as_unconfirmed(database_url):
    """A page closed before it reported (or JavaScript off) leaves pending rows; the sweep settles them."""
    env, front = _front_env(database_url)
    try:
        browser = Browser(env.idp.url)
        browser.login()
        authorize(browser, front)
        env.idp.provider.terminate_now(
            by_subject("alice"), reason="logout", initiator="test", browser_present=True, wait=0
        )
        assert _rows(env)["rp-front"] == ("frontchannel", "pending")
        assert env.idp.provider.settle_stale_frontchannel() == 0  # still within the page's time
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
        assert env.idp.provider.settle_stale_frontchannel(now=later) == 1
        assert _rows(env)["rp-front"] == ("frontchannel", "unconfirmed")
    finally:
        env.idp.stop()
        env.rps.stop()
