"""Scale-out mode (PostgreSQL, no embedded dispatcher): a committed termination wakes the
workers through LISTEN/NOTIFY, and the logout still waits (bounded) for its deliveries."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.orm import sessionmaker

from oidc_logout.delivery.worker import Worker
from oidc_logout.keys import KeyRing
from oidc_logout.storage.schema import make_engine
from oidc_logout.termination import by_subject
from tests.support.idp import Browser, authorize
from tests.termination.conftest import make_env


@pytest.mark.postgres
def test_worker_wakes_on_notify_and_the_logout_waits_for_it(pg_databases):
    """With a 10 s poll interval, delivery within the logout's 5 s wait proves the NOTIFY
    wake-up (how fast it is, is measured in bench/)."""
    url = pg_databases.new()
    env = make_env(url, embedded_dispatcher=False)
    engine = make_engine(url)
    factory = sessionmaker(engine, expire_on_commit=False)
    worker = Worker(factory, KeyRing(factory), env.idp.settings, poll_interval=10.0)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
    try:
        browser = Browser(env.idp.url)
        browser.login()
        for name in ("rp-a", "rp-b"):
            authorize(browser, env.metas[name])
        thread.start()
        time.sleep(1.0)  # the worker has polled once and now sleeps for 10 s
        outcome = env.idp.provider.terminate_now(
            by_subject("alice"), reason="test", initiator="test", wait=5.0
        )
        assert outcome.settled, "the bounded wait saw the worker deliver"
        assert len(env.rps.hits("/rp-a")) == 1 and len(env.rps.hits("/rp-b")) == 1
    finally:
        worker.request_stop()
        thread.join(15)
        env.idp.stop()
        env.rps.stop()
        engine.dispose()
        pg_databases.drop(url)
