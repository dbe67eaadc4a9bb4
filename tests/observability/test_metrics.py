"""``/metrics``: Prometheus counters, histograms and database gauges move with real logouts
delivered to real RPs (loopback ``CaptureServer`` receivers), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from oidc_logout.testing import Reply
from tests.termination.conftest import admin_token

from .conftest import scrape, sign_in, value

ROOT = Path(__file__).resolve().parents[2]


def _until(url: str, check, timeout: float = 10.0, token: str | None = None):  # type: ignore[no-untyped-def]
    """Scrape until ``check(samples)`` holds (results are recorded after the RP answered)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url, token)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_a_logout_moves_the_termination_delivery_and_wait_metrics(env_factory):
    env = env_factory()
    url = env.idp.url
    before = scrape(url)
    browser, tokens = sign_in(env)
    resp = browser.http.get(
        f"{url}/end_session",
        params={"id_token_hint": tokens["rp-a"]["id_token"]},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 200
    env.rps.wait_for(1, 5, path="/rp-a")
    env.rps.wait_for(1, 5, path="/rp-b")

    def delivered(s):  # type: ignore[no-untyped-def]
        return value(s, "oidc_logout_deliveries_total", channel="backchannel", outcome="delivered")

    after = _until(url, lambda s: delivered(s) - delivered(before) >= 2)
    assert delivered(after) - delivered(before) == 2
    term = "oidc_logout_terminations_total"
    assert value(after, term, cause="end_session") - value(before, term, cause="end_session") == 1
    dur = "oidc_logout_delivery_duration_seconds_count"
    assert value(after, dur, outcome="delivered") - value(before, dur, outcome="delivered") == 2
    wait = "oidc_logout_logout_wait_seconds_count"
    waited = sum(value(after, wait, settled=v) - value(before, wait, settled=v) for v in ("true", "false"))
    assert waited == 1
    assert value(after, "oidc_logout_database_up") == 1
    assert value(after, "oidc_logout_outbox_pending") == 0
    assert value(after, "oidc_logout_outbox_dead") == 0


def test_revocations_are_counted_by_token_kind(env_factory):
    env = env_factory()
    url = env.idp.url
    _browser, tokens = sign_in(env, names=("rp-a",))
    meta = env.metas["rp-a"]
    before = scrape(url)
    auth = (meta["client_id"], meta["client_secret"])
    for kind in ("access_token", "refresh_token"):
        r = requests.post(
            f"{url}/revoke",
            data={"token": tokens["rp-a"][kind], "token_type_hint": kind},
            auth=auth,
            timeout=10,
        )
        assert r.status_code == 200, r.text
    after = scrape(url)
    rev = "oidc_logout_revocations_total"
    assert value(after, rev, kind="access_token") - value(before, rev, kind="access_token") == 1
    assert value(after, rev, kind="refresh_token") - value(before, rev, kind="refresh_token") == 1
    # Revoking the refresh token is a termination of its grant (RFC 7009 §2.1).
    term = "oidc_logout_terminations_total"
    assert value(after, term, cause="revocation") - value(before, term, cause="revocation") == 1


def test_a_dead_letter_shows_in_the_outbox_gauge_and_the_dead_counter(env_factory):
    env = env_factory(replies={"rp-c": [Reply(500)] * 5}, delivery_max_attempts=1)
    url = env.idp.url
    sign_in(env, names=("rp-c",))
    before = scrape(url)
    token = admin_token(env)
    r = requests.post(
        f"{url}/admin/terminations",
        json={"sub": "alice", "reason": "test", "wait": 5},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    assert r.status_code == 201, r.text
    after = _until(url, lambda s: value(s, "oidc_logout_outbox_dead") == 1)
    assert value(after, "oidc_logout_outbox_dead") == 1
    dead = ("oidc_logout_deliveries_total", "backchannel", "dead")
    assert (
        value(after, dead[0], channel=dead[1], outcome=dead[2])
        - value(before, dead[0], channel=dead[1], outcome=dead[2])
        == 1
    )
    term = "oidc_logout_terminations_total"
    assert value(after, term, cause="admin") - value(before, term, cause="admin") == 1


def test_metrics_need_the_metrics_token_or_an_admin_token_when_one_is_set(env_factory):
    secret = "scrape-" + "m" * 24
    env = env_factory(metrics_token=secret)
    url = env.idp.url
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
    wrong = requests.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert "oidc_logout_terminations_total" not in wrong.text
    assert (
        "oidc_logout_terminations_total"
        in requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {secret}"}, timeout=10).text
    )
    scrape(url, admin_token(env))  # an admin-scoped access token works too


def test_multiprocess_mode_merges_the_counters_of_every_process(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR (gunicorn workers), a scrape answered by any process
    shows the sum over all processes."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    bump = "import oidc_logout.metrics as m; m.TERMINATIONS.labels('cli').inc()"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", bump], env=env, check=True, timeout=60)
    show = "import oidc_logout.metrics as m; print(m.exposition()[0].decode())"
    out = subprocess.run(
        [sys.executable, "-c", show], env=env, check=True, timeout=60, capture_output=True, text=True
    )
    assert 'oidc_logout_terminations_total{cause="cli"} 2.0' in out.stdout


def test_front_channel_reports_are_counted_only_once_committed(env_factory):
    from oidc_logout.storage.models import Delivery
    from oidc_logout.termination import by_subject
    from oidc_logout.vocabulary import Channel
    from tests.support.idp import client_meta

    fc = [
        client_meta(f"fc-{i}", port=21000 + i, frontchannel_logout_uri=f"http://127.0.0.1:{21000 + i}/fc")
        for i in (1, 2)
    ]
    env = env_factory(extra_clients=fc)
    env.metas.update({m["client_id"]: m for m in fc})
    provider = env.idp.provider
    sign_in(env, names=("fc-1", "fc-2"))
    out = provider.terminate_now(
        by_subject("alice"), reason="test", initiator="test", browser_present=True, wait=0
    )
    ids = sorted(d for d, _uri, _sid in out.frontchannel)
    assert len(ids) == 2
    url = env.idp.url
    before = scrape(url)
    name, ch = "oidc_logout_deliveries_total", Channel.FRONTCHANNEL.value
    with provider.session_factory() as db:  # a report that rolls back counts nothing
        provider.record_frontchannel_report(db, out.termination_id, {ids[0]})
        db.rollback()
    assert value(scrape(url), name, channel=ch, outcome="confirmed") == value(
        before, name, channel=ch, outcome="confirmed"
    )
    with provider.session_factory.begin() as db:
        assert provider.record_frontchannel_report(db, out.termination_id, {ids[0]}) == 2
    after = scrape(url)
    for outcome in ("confirmed", "unconfirmed"):
        assert (
            value(after, name, channel=ch, outcome=outcome) - value(before, name, channel=ch, outcome=outcome)
            == 1
        )
    with provider.session_factory() as db:
        assert {d.state for d in db.query(Delivery).filter(Delivery.id.in_(ids))} == {
            "confirmed",
            "unconfirmed",
        }
