"""`oidc-logout retry --now` beside a running service (Dispatcher.attempt_each): every
requeued row gets its attempt exactly once, whichever dispatcher claims it first, and no
other due work is taken. Real loopback RPs, a real SQLite/PostgreSQL outbox."""

from __future__ import annotations

import threading
import time

from oidc_logout.delivery import outbox
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.storage.models import DELIVERED, PENDING

from .conftest import DB, Reply, RPServer, fast_settings


def _cli_dispatcher(db: DB, dispatchers: list[Dispatcher]) -> Dispatcher:
    d = Dispatcher(db.factory, db.keyring, fast_settings())  # type: ignore[arg-type]
    dispatchers.append(d)
    return d


def test_a_row_the_service_claimed_first_is_waited_for_and_sent_once(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    # The service answers slowly: attempt_each must wait for its recorded attempt, not
    # return while the row is in flight (the CLI then reported "in_flight", exit 4).
    ids = outbox_db.add_deliveries([rp.url("/mine"), rp.url("/service", Reply(200, delay=0.5))])
    service = Dispatcher(outbox_db.factory, outbox_db.keyring, fast_settings())  # type: ignore[arg-type]
    dispatchers.append(service)
    assert service.deliver_now([ids[1]]) == [ids[1]]

    counts = _cli_dispatcher(outbox_db, dispatchers).attempt_each(dict.fromkeys(ids, 0), stall_timeout=10)

    assert counts == {"delivered": 1}  # the other row was the service's to send
    assert [outbox_db.get(i).state for i in ids] == [DELIVERED, DELIVERED]
    assert len(rp.hits("/service")) == 1 and len(rp.hits("/mine")) == 1


def test_a_row_the_service_gave_back_is_claimed_and_sent_here(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    # A full per-client or per-host bound makes a dispatcher give a claim back, unattempted.
    ids = outbox_db.add_deliveries([rp.url("/given-back")])
    held = outbox.claim_due(outbox_db.factory, "service", 1, 30, ids)
    assert [c.id for c in held] == ids
    timer = threading.Timer(0.3, outbox.release, (outbox_db.factory, held, "service"))
    timer.start()
    try:
        counts = _cli_dispatcher(outbox_db, dispatchers).attempt_each({ids[0]: 0}, stall_timeout=10)
    finally:
        timer.join()
    assert counts == {"delivered": 1}
    assert outbox_db.get(ids[0]).attempts == 1 and len(rp.hits("/given-back")) == 1


def test_only_the_requeued_rows_are_claimed(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    requeued = outbox_db.add_deliveries([rp.url("/requeued")])
    other = outbox_db.add_deliveries([rp.url("/other")])  # due too, not part of the retry
    counts = _cli_dispatcher(outbox_db, dispatchers).attempt_each({requeued[0]: 0}, stall_timeout=10)
    assert counts == {"delivered": 1}
    assert outbox_db.get(other[0]).state == PENDING and rp.hits("/other") == []


def test_a_row_held_elsewhere_without_progress_ends_as_unfinished(
    outbox_db: DB, rp: RPServer, dispatchers: list[Dispatcher]
) -> None:
    ids = outbox_db.add_deliveries([rp.url("/held")])
    assert outbox.claim_due(outbox_db.factory, "stuck-service", 1, 60, ids)  # never recorded
    t0 = time.monotonic()
    counts = _cli_dispatcher(outbox_db, dispatchers).attempt_each({ids[0]: 0}, stall_timeout=0.5)
    assert counts == {"unfinished": 1}
    assert time.monotonic() - t0 < 30  # bounded by the stall timeout, not the 60 s lease
    assert rp.hits("/held") == []
