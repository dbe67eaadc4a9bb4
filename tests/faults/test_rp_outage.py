"""An RP that is down (connection refused) for a while and then comes back on the same port
gets every notification: retries with (small) backoff, no give-up, other RPs unaffected."""

from __future__ import annotations

import time

from sqlalchemy import select

from oidc_logout.config import Settings
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.keys import KeyRing
from oidc_logout.storage.models import DELIVERED, Delivery, DeliveryAttempt

from .conftest import ISSUER, Receiver, factory_for, seed_fanout, wait_until

SESSIONS = 25
MIN_TRIES_DOWN = 2


def test_rp_down_then_up_on_the_same_port_gets_its_notifications(database_url: str) -> None:
    healthy = Receiver()
    flaky = Receiver()
    port = flaky.port
    flaky.stop()  # connection refused from now on
    factory = factory_for(database_url)
    settings = Settings(
        issuer=ISSUER,
        database_url=database_url,
        dev_mode=True,
        delivery_backoff_base=0.1,
        delivery_backoff_cap=0.4,
        delivery_max_attempts=100,
        delivery_connect_timeout=1.0,
        delivery_timeout=2.0,
        delivery_concurrency=8,
        # This test watches every row retried during the outage; the retry
        # budget (which spreads them out) has tests of its own.
        delivery_client_retry_budget=0,
    )
    term_id, _ids = seed_fanout(
        factory, sessions=SESSIONS, uris=[healthy.url("/bc"), f"http://127.0.0.1:{port}/bc"]
    )
    dispatcher = Dispatcher(factory, KeyRing(factory), settings, poll_interval=0.1)
    dispatcher.start()
    try:
        # The healthy RP is served at once, the dead one's rows go back to pending with backoff.
        assert wait_until(lambda: len(healthy.per_sid) == SESSIONS, 10)
        # Down until every one of its rows has been tried (and refused) at least twice - the
        # event that proves the outage was seen, instead of a fixed sleep.
        down_since = time.monotonic()

        def all_retried_while_down() -> bool:
            with factory() as db:
                return (
                    min(db.scalars(select(Delivery.attempts).where(Delivery.target_uri.contains(str(port)))))
                    >= MIN_TRIES_DOWN
                )

        assert wait_until(all_retried_while_down, 15, 0.05)
        down_for = time.monotonic() - down_since
        with factory() as db:
            states = {
                d.state for d in db.scalars(select(Delivery).where(Delivery.target_uri.contains(str(port))))
            }
        assert DELIVERED not in states and states <= {"pending", "in_flight"}, states
        restarted = Receiver(port=port)
        up_at = time.monotonic()
        try:

            def all_delivered() -> bool:
                with factory() as db:
                    return all(
                        s == DELIVERED
                        for s in db.scalars(select(Delivery.state).where(Delivery.termination_id == term_id))
                    )

            assert wait_until(all_delivered, 15, 0.05)
            caught_up = time.monotonic() - up_at
        finally:
            restarted.stop()
    finally:
        dispatcher.stop(5)
        healthy.stop()
        factory.kw["bind"].dispose()

    with factory() as db:
        rows = list(
            db.scalars(
                select(Delivery).where(
                    Delivery.termination_id == term_id, Delivery.target_uri.contains(str(port))
                )
            )
        )
        attempts = [r.attempts for r in rows]
        errors = list(
            db.scalars(
                select(DeliveryAttempt.error).where(
                    DeliveryAttempt.delivery_id.in_([r.id for r in rows]), DeliveryAttempt.outcome == "retry"
                )
            )
        )
    assert len(rows) == SESSIONS and min(attempts) >= 2
    assert errors and all("network error" in e for e in errors)
    assert sorted(restarted.per_sid.values()) == [1] * SESSIONS  # once each after recovery
    print(
        f"\n[rp outage/{database_url.split(':')[0]}] down {down_for:.2f}s: attempts per row "
        f"min={min(attempts)} max={max(attempts)}; all delivered {caught_up:.2f}s after "
        f"the RP came back"
    )
