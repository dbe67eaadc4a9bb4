"""The per-host concurrency window (issue 15): a healthy host's window widens with its
deliveries up to the ceiling, a host that shows overload gets half as many attempts at once.
The window itself is pure bookkeeping (tested with explicit clocks); the dispatcher's use of
it is read off a real loopback RP's own counters, on SQLite and PostgreSQL outboxes."""

from __future__ import annotations

import time

from oidc_logout.backchannel.request import DELIVERED, FAILED, RETRY, AttemptResult
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.delivery.host_window import HostWindows, is_overload
from oidc_logout.storage.models import DELIVERED as DELIVERED_STATE

from .conftest import DB, Reply, RPServer, fast_settings

HOST = "rp.example"


def result(outcome: str, status: int | None) -> AttemptResult:
    return AttemptResult(outcome, status, None, None, 5, "jti")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the window


def test_a_host_not_seen_before_starts_at_the_initial_window() -> None:
    w = HostWindows(initial=4, ceiling=16)
    assert w.limit(HOST, now=0.0) == 4


def test_the_initial_window_never_exceeds_the_ceiling() -> None:
    assert HostWindows(initial=32, ceiling=3).limit(HOST, now=0.0) == 3


def test_each_delivery_widens_the_window_by_one_up_to_the_ceiling() -> None:
    w = HostWindows(initial=4, ceiling=10)
    for i in range(3):
        w.succeeded(HOST, now=float(i))
    assert w.limit(HOST, now=3.0) == 7
    for i in range(20):
        w.succeeded(HOST, now=4.0 + i)
    assert w.limit(HOST, now=30.0) == 10


def _grown(initial: int, ceiling: int, successes: int) -> HostWindows:
    w = HostWindows(initial=initial, ceiling=ceiling)
    for i in range(successes):
        w.succeeded(HOST, now=float(i) / 1000)
    return w


def test_overload_halves_the_window_once_per_wave() -> None:
    """A window grown to 32; eight attempts of one wave time out: the first failure halves
    it, the other seven (started before that cut) do not cut it again."""
    w = _grown(initial=4, ceiling=64, successes=28)
    assert w.limit(HOST, now=1.0) == 32
    assert w.overloaded(HOST, started_at=1.0, now=2.0)
    for _ in range(7):
        assert not w.overloaded(HOST, started_at=1.5, now=2.1)
    assert w.limit(HOST, now=2.2) == 16
    # An attempt started after the cut that meets overload again halves again.
    assert w.overloaded(HOST, started_at=2.5, now=3.0)
    assert w.limit(HOST, now=3.1) == 8


def test_after_overload_the_window_grows_by_one_per_window_of_deliveries() -> None:
    w = _grown(initial=4, ceiling=64, successes=12)  # 16
    w.overloaded(HOST, started_at=1.0, now=2.0)  # 8, and no more slow start
    for i in range(9):
        w.succeeded(HOST, now=3.0 + i)
    assert w.limit(HOST, now=20.0) == 9  # 9 deliveries: +1 (slow start would make it 17)


def test_the_window_never_drops_below_the_initial_window() -> None:
    """One hanging RP of a shared host times out at every logout: the host keeps the window a
    host never heard from gets, whatever the number of cuts."""
    w = _grown(initial=4, ceiling=64, successes=12)  # 16
    for i in range(6):
        w.overloaded(HOST, started_at=10.0 + i * 2, now=11.0 + i * 2)
    assert w.limit(HOST, now=30.0) == 4


def test_an_idle_host_starts_over_at_the_initial_window() -> None:
    w = HostWindows(initial=4, ceiling=64, idle_reset=60.0)
    for i in range(10):
        w.succeeded(HOST, now=float(i))
    assert w.limit(HOST, now=10.0) == 14
    assert w.limit(HOST, now=9.0 + 60.0) == 4


def test_windows_are_per_host_and_bounded_in_number() -> None:
    w = HostWindows(initial=2, ceiling=8, max_hosts=2)
    w.succeeded("a", now=0.0)
    w.succeeded("b", now=1.0)
    w.succeeded("c", now=2.0)  # "a", least recently used, is forgotten
    assert (w.limit("a", now=3.0), w.limit("b", now=3.0), w.limit("c", now=3.0)) == (2, 3, 3)


def test_only_no_answer_and_overload_statuses_are_overload() -> None:
    assert is_overload(result(RETRY, None))  # timeout, refused or reset connection
    for status in (429, 502, 503, 504):
        assert is_overload(result(RETRY, status))
    assert not is_overload(result(RETRY, 500))  # the RP's own error, not its load
    assert not is_overload(result(DELIVERED, 200))
    assert not is_overload(result(FAILED, None))  # a refused address made no connection
    assert not is_overload(result(FAILED, 400))


# --------------------------------------------------------------------------- the dispatcher


def test_a_healthy_host_gets_more_than_the_initial_window_but_never_the_ceiling(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """40 RPs of one host answering after 0.2 s, window 4 widening to at most 12: more than 4
    POSTs end up in the air at once (the window widened with the deliveries), never more than
    12, and every row is delivered."""
    uris = [rp.url(f"/healthy{i}", Reply(200, delay=0.2)) for i in range(40)]
    ids = outbox_db.add_deliveries(uris)
    settings = fast_settings(
        delivery_concurrency=32,
        delivery_initial_concurrent_per_host=4,
        delivery_max_concurrent_per_host=12,
    )
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=0.05)
    dispatchers.append(disp)
    disp.start()
    disp.deliver_now(ids)
    assert disp.wait_for(ids, 30)
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED_STATE}
    assert 4 < rp.max_active <= 12, rp.max_active
    assert disp.host_windows.limit("127.0.0.1", time.monotonic()) == 12


def test_a_host_answering_503_gets_half_as_many_attempts_at_once(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    """A host whose window grew from 4 to 16 answers a wave of 16 POSTs with 503: its window
    halves (once) to 8, and the next 16 notifications to it, answered normally, run at most
    9 at once (8, grown by one per window of deliveries), where 16 ran before."""
    settings = fast_settings(
        delivery_concurrency=32,
        delivery_initial_concurrent_per_host=4,
        delivery_max_concurrent_per_host=16,
        delivery_max_attempts=1,
    )
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings, poll_interval=0.05)
    dispatchers.append(disp)
    outbox_db.add_deliveries([rp.url(f"/warm{i}", Reply(200)) for i in range(12)])
    assert disp.run_once(timeout=30) == {"delivered": 12}
    assert disp.host_windows.limit("127.0.0.1", time.monotonic()) == 16

    outbox_db.add_deliveries([rp.url(f"/busy{i}", Reply(503, delay=0.2)) for i in range(16)])
    rp.clear()
    rp.max_active = 0  # quiescent: nothing in flight
    assert disp.run_once(timeout=30) == {"dead": 16}
    assert rp.max_active == 16
    assert disp.host_windows.limit("127.0.0.1", time.monotonic()) == 8

    ids = outbox_db.add_deliveries([rp.url(f"/after{i}", Reply(200, delay=0.2)) for i in range(16)])
    rp.clear()
    rp.max_active = 0
    assert disp.run_once(timeout=30) == {"delivered": 16}
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED_STATE}
    assert rp.max_active <= 9, rp.max_active


def test_a_hanging_endpoint_of_a_host_that_delivers_does_not_cut_its_window() -> None:
    """One RP's endpoint times out while the host's other RPs are delivered: that endpoint
    hangs, the host answers; the window stays. Without a delivery meanwhile it is cut."""
    w = _grown(initial=4, ceiling=64, successes=12)  # 16
    w.succeeded(HOST, now=12.0)  # delivered after the hung attempt started at 10.0
    assert not w.overloaded(HOST, started_at=10.0, now=15.0, answered=False)
    assert w.limit(HOST, now=15.0) == 17
    assert w.overloaded(HOST, started_at=13.0, now=18.0, answered=False)  # nothing since 13.0
    assert w.limit(HOST, now=18.0) == 8


def test_an_overload_answer_cuts_the_window_even_while_others_are_delivered() -> None:
    w = _grown(initial=4, ceiling=64, successes=12)  # 16
    w.succeeded(HOST, now=12.0)
    assert w.overloaded(HOST, started_at=10.0, now=12.5, answered=True)  # a 503
    assert w.limit(HOST, now=13.0) == 8
