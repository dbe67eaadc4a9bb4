"""The group commit of delivery results (:meth:`Dispatcher._record`): results of concurrent
attempts are written in one transaction per batch, each thread woken once its result is
written. Real SQLite and PostgreSQL outboxes."""

from __future__ import annotations

import threading

from oidc_logout.backchannel.request import AttemptOutcome, AttemptResult
from oidc_logout.delivery import outbox
from oidc_logout.delivery.dispatcher import Dispatcher, _PendingResult
from oidc_logout.storage.models import DELIVERED

from .conftest import DB, fast_settings, write_rows


def delivered() -> AttemptResult:
    return AttemptResult(AttemptOutcome.DELIVERED, 200, None, None, 5, None)


def test_a_result_whose_writer_never_comes_is_written_by_its_own_thread(
    outbox_db: DB, dispatchers: list[Dispatcher]
) -> None:
    """A result queued behind a write whose writer then vanished without taking the queue
    (seen once in a bench worker: ten threads waited for good and the worker hung at exit)
    is written by its own thread after ``handoff_patience``, with the rest of the queue."""
    with outbox_db.factory.begin() as s:
        ids = write_rows(s, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"])
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, fast_settings())
    dispatchers.append(disp)
    disp.handoff_patience = 0.2
    claims = outbox.claim_due(outbox_db.factory, disp.owner, 2, 30, ids=ids)
    assert len(claims) == 2
    disp._rec_busy = True  # a write in progress: both results queue behind it
    outcomes: dict[int, tuple[str, object]] = {}

    def record(c: outbox.ClaimedDelivery) -> None:
        outcomes[c.id] = disp._record(c, delivered())

    threads = [threading.Thread(target=record, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    while len(disp._rec_queue) < 2:
        threading.Event().wait(0.01)
    with disp._rec_lock:  # the writer vanishes: no hand-off, the queue is dropped
        lost: list[_PendingResult] = disp._rec_queue
        disp._rec_queue = []
        disp._rec_busy = False
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert {state for state, _ in outcomes.values()} == {DELIVERED}
    assert {outbox_db.get(i).state for i in ids} == {DELIVERED}
    assert all(it.finished for it in lost) and not disp._rec_busy
