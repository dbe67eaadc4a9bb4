"""The embedded dispatcher end to end: real loopback RPs, a real SQLite/PostgreSQL outbox."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from oidc_logout.config import Settings
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import DEAD, DELIVERED, FAILED, PENDING

from .conftest import DB, Reply, RPServer, fast_settings


@pytest.fixture
def make_dispatcher() -> Iterator:
    made: list[Dispatcher] = []

    def make(db: DB, settings: Settings | None = None, **kw: object) -> Dispatcher:
        d = Dispatcher(db.factory, db.keyring, settings or fast_settings(), **kw)  # type: ignore[arg-type]
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop(timeout=5)


def test_fifty_rps_are_delivered_in_parallel_not_one_after_another(
    sqlite_db: DB, rp: RPServer, make_dispatcher
) -> None:
    # Each RP holds its answer for 1 s: one after another would never have more than one
    # request at the RP server at a time. (How fast is measured in bench/, not here.)
    uris = [rp.url(f"/rp{i}", Reply(200, delay=1.0)) for i in range(50)]
    ids = sqlite_db.add_deliveries(uris)
    disp = make_dispatcher(sqlite_db, fast_settings(delivery_concurrency=50, delivery_timeout=5.0))
    assert disp.deliver_now(ids) == ids
    assert disp.wait_for(ids, 30)
    assert rp.max_active >= 25, f"at most {rp.max_active} RPs were served at once"
    assert all(sqlite_db.get(i).state == DELIVERED for i in ids)


def test_a_hanging_rp_delays_neither_the_others_nor_wait_for(
    sqlite_db: DB, rp: RPServer, make_dispatcher
) -> None:
    settings = fast_settings(delivery_timeout=5.0)
    hang = sqlite_db.add_deliveries([rp.url("/hang", Reply(hang=True))])
    others = sqlite_db.add_deliveries([rp.url(f"/ok{i}") for i in range(5)])
    disp = make_dispatcher(sqlite_db, settings)
    t0 = time.monotonic()
    disp.deliver_now(hang + others)
    # Ordering, not speed: the others are served while the hanging attempt still waits out
    # its 5 s read timeout (not queued behind it).
    assert disp.wait_for(others, 10)
    assert sqlite_db.get(hang[0]).attempts == 0, "the others waited for the hanging RP"
    assert time.monotonic() - t0 < 5.0
    t1 = time.monotonic()
    assert disp.wait_for(hang + others, 0.3) is False  # bounded wait, then background
    assert time.monotonic() - t1 >= 0.25
    # The hanging RP finishes in the background: after its read timeout the attempt is
    # recorded as a retry.
    deadline = time.monotonic() + 15
    while sqlite_db.get(hang[0]).attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    row = sqlite_db.get(hang[0])
    assert row.attempts == 1 and row.attempt_log[0].outcome == "retry"
    assert row.attempt_log[0].duration_ms >= 4800


def test_rp_answering_400_is_not_retried(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    body = b'{"error":"invalid_request","error_description":"unknown sid"}'
    ids = sqlite_db.add_deliveries([rp.url("/400", Reply(400, body=body), Reply(200))])
    # Positive control: a 500-then-200 RP in the same batch; its retry proves a retry round
    # has run by the time it arrives (no sleeping for a retry that must not come).
    control = sqlite_db.add_deliveries([rp.url("/control", Reply(500), Reply(200))])
    disp = make_dispatcher(sqlite_db, poll_interval=0.05)
    disp.start()
    disp.kick()
    assert disp.wait_for(ids + control, 5)
    assert rp.wait_for(2, 5, path="/control", answered=True)
    assert sqlite_db.get(control[0]).state == DELIVERED
    row = sqlite_db.get(ids[0])
    assert row.state == FAILED and row.attempts == 1 and row.last_status == 400
    assert row.last_error == "HTTP 400 invalid_request: unknown sid"
    assert len(rp.hits("/400")) == 1


def test_rp_answering_500_then_200_is_delivered_on_the_second_attempt(
    sqlite_db: DB, rp: RPServer, make_dispatcher
) -> None:
    ids = sqlite_db.add_deliveries([rp.url("/flaky", Reply(500), Reply(200))])
    # A 60 s poll: only the wake-up scheduled for the retry's due time can deliver it in 10 s.
    disp = make_dispatcher(sqlite_db, poll_interval=60)
    disp.start()
    assert disp.wait_for(ids, 10)
    row = sqlite_db.get(ids[0])
    assert row.state == DELIVERED and row.attempts == 2
    assert [(a.number, a.outcome, a.http_status) for a in row.attempt_log] == [
        (1, "retry", 500),
        (2, "delivered", 200),
    ]


def test_429_retry_after_is_honoured_and_capped(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    settings = fast_settings(delivery_retry_after_cap=90)
    ids = sqlite_db.add_deliveries([rp.url("/429", Reply(429, {"Retry-After": "86400"}))])
    disp = make_dispatcher(sqlite_db, settings)
    before = utcnow()
    assert disp.run_once() == {"retry": 1}
    row = sqlite_db.get(ids[0])
    assert row.state == PENDING and row.last_status == 429
    wait = (row.next_attempt_at - before).total_seconds()
    assert 89 <= wait <= 91
    assert disp.run_once() == {}  # not due: not attempted again
    assert len(rp.hits("/429")) == 1


def test_delivery_goes_dead_after_the_last_attempt(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    settings = fast_settings(delivery_max_attempts=3)
    ids = sqlite_db.add_deliveries([rp.url("/down", Reply(503))])
    disp = make_dispatcher(sqlite_db, settings, poll_interval=0.05)
    disp.start()
    assert disp.wait_for(ids, 5)
    row = sqlite_db.get(ids[0])
    assert row.state == DEAD and row.attempts == 3
    assert [a.outcome for a in row.attempt_log] == ["retry", "retry", "dead"]
    assert len(rp.hits("/down")) == 3


def test_redirecting_rp_fails_without_following(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    ids = sqlite_db.add_deliveries([rp.url("/r", Reply(302, {"Location": rp.url("/t")}))])
    assert make_dispatcher(sqlite_db).run_once() == {"failed": 1}
    row = sqlite_db.get(ids[0])
    assert row.state == FAILED and "redirect not followed" in (row.last_error or "")
    assert rp.hits("/t") == []


def test_address_policy_applies_to_delivery(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    ids = sqlite_db.add_deliveries([rp.url("/loop")])
    disp = make_dispatcher(sqlite_db, fast_settings(dev_mode=False))
    assert disp.run_once() == {"failed": 1}
    assert "not allowed" in (sqlite_db.get(ids[0]).last_error or "")
    assert rp.hits("/loop") == []
    allow = make_dispatcher(sqlite_db, fast_settings(dev_mode=False, address_allowlist=("127.0.0.0/8",)))
    ids = sqlite_db.add_deliveries([rp.url("/allowed")])
    assert allow.run_once() == {"delivered": 1}


def test_due_retries_survive_a_restart(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    ids = sqlite_db.add_deliveries([rp.url("/restart", Reply(500), Reply(204))])
    first = make_dispatcher(sqlite_db)
    assert first.run_once() == {"retry": 1}
    first.stop()
    time.sleep(0.06)  # backoff cap 0.05 s
    second = make_dispatcher(sqlite_db, poll_interval=0.05)
    second.start()
    assert second.wait_for(ids, 5)
    assert sqlite_db.get(ids[0]).state == DELIVERED


def test_kick_wakes_the_polling_thread_immediately(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    disp = make_dispatcher(sqlite_db, poll_interval=30)
    disp.start()
    time.sleep(0.1)  # the thread is now asleep for 30 s
    ids = sqlite_db.add_deliveries([rp.url("/kicked")])
    disp.kick()
    assert disp.wait_for(ids, 10)  # long before the 30 s poll would have found it


def test_on_result_hook_sees_every_attempt(sqlite_db: DB, rp: RPServer, make_dispatcher) -> None:
    seen = []
    ids = sqlite_db.add_deliveries([rp.url("/a"), rp.url("/b", Reply(404))])
    disp = make_dispatcher(sqlite_db, on_result=lambda c, r: seen.append((c.id, r.outcome)))
    assert disp.run_once() == {"delivered": 1, "failed": 1}
    assert sorted(seen) == [(ids[0], "delivered"), (ids[1], "failed")]


def test_stop_gives_back_claims_that_never_started(sqlite_db: DB, rp: RPServer) -> None:
    settings = fast_settings(delivery_concurrency=1, delivery_timeout=0.5)
    ids = sqlite_db.add_deliveries([rp.url("/h", Reply(hang=True))])
    more = sqlite_db.add_deliveries([rp.url(f"/q{i}") for i in range(3)])
    disp = Dispatcher(sqlite_db.factory, sqlite_db.keyring, settings)
    disp.deliver_now(ids + more)  # one running (hanging), three queued behind it
    assert rp.wait_for(1, 5, path="/h")  # the hanging attempt is in flight
    assert disp.stop(timeout=3)
    states = {sqlite_db.get(i).state for i in more}
    assert states == {PENDING}  # released, not left leased
    assert sqlite_db.get(ids[0]).attempts == 1


@pytest.mark.postgres
def test_postgres_parallel_delivery_and_retry(pg_db: DB, rp: RPServer, make_dispatcher) -> None:
    ids = pg_db.add_deliveries(
        [rp.url(f"/p{i}", Reply(200, delay=1.0)) for i in range(20)]
        + [rp.url("/pflaky", Reply(500), Reply(200))]
    )
    disp = make_dispatcher(
        pg_db, fast_settings(delivery_concurrency=32, delivery_timeout=5.0), poll_interval=0.05
    )
    disp.deliver_now(ids)
    disp.start()
    assert disp.wait_for(ids, 20)
    assert rp.max_active >= 10, f"at most {rp.max_active} RPs were served at once"
    assert pg_db.get(ids[-1]).attempts == 2
