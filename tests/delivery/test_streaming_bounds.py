"""Memory flat in the fan-out (issue 17 item 4), as a structural bound: however many rows are
due, a dispatcher holds at most 2 x delivery_concurrency claims at once (claimed and not yet
recorded), in the background loop and in ``run_once`` alike. No timing; the counter is the
dispatcher's own ``max_held``. Real loopback RP, SQLite and PostgreSQL."""

from __future__ import annotations

from oidc_logout.config import Settings
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.storage.models import DELIVERED

from .conftest import DB, RPServer, fast_settings

ROWS = 300
CONCURRENCY = 4


def settings() -> Settings:
    return fast_settings(delivery_concurrency=CONCURRENCY, delivery_batch_size=100)


def test_run_once_holds_at_most_twice_the_concurrency(outbox_db: DB, rp: RPServer) -> None:
    ids = outbox_db.add_deliveries([rp.url(f"/rp{i}") for i in range(ROWS)])
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings())
    try:
        assert disp.run_once(timeout=120) == {"delivered": ROWS}
    finally:
        disp.stop()
    assert 0 < disp.max_held <= 2 * CONCURRENCY, disp.max_held
    assert {outbox_db.get(i).state for i in ids[:: ROWS // 10]} == {DELIVERED}
    assert len(rp.requests) == ROWS


def test_background_loop_holds_at_most_twice_the_concurrency(outbox_db: DB, rp: RPServer) -> None:
    ids = outbox_db.add_deliveries([rp.url(f"/rp{i}") for i in range(ROWS)])
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings(), poll_interval=0.05)
    disp.start()
    try:
        assert disp.wait_for(ids, 120)
    finally:
        disp.stop()
    assert 0 < disp.max_held <= 2 * CONCURRENCY, disp.max_held
    assert len(rp.requests) == ROWS
