"""Deliveries give up by age, not by attempt count (issue 17 item 3): with the DEFAULT
settings a two-minute RP outage dead-letters nothing, however many attempts the backoff
fits into it, and the rows are delivered when the RP returns; a row older than
``delivery_max_age`` goes dead at its next failure, recorded and logged as ``dead`` with the
reason. The two minutes are *simulated*: the clock is injected into the claim and the
recording (``now``), the attempts are real HTTP connections to a real loopback port that is
closed during the outage and listening again afterwards. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from sqlalchemy import func, select

from oidc_logout.backchannel.request import attempt_delivery
from oidc_logout.config import Settings
from oidc_logout.delivery import outbox
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.poster import Poster
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import DEAD, DELIVERED, PENDING, Delivery
from oidc_logout.testing import CaptureServer

from .conftest import DB, ISSUER, Reply, RPServer

OUTAGE = dt.timedelta(minutes=2)
ROWS = 5


def default_settings() -> Settings:
    """The shipped defaults; only what a loopback test RP needs (dev mode) and the issuer."""
    return Settings(issuer=ISSUER, dev_mode=True)


def deliver_due(db: DB, settings: Settings, now: dt.datetime, http: object) -> int:
    """One pass at simulated time ``now``: claim what is due, attempt it for real, record the
    results at ``now``. Returns the number of attempts made."""
    claims = outbox.claim_due(db.factory, "sim", 100, settings.delivery_lease_seconds, now=now)
    results = [
        (
            c,
            attempt_delivery(
                http,  # type: ignore[arg-type]
                db.keyring,
                settings,
                client_id=c.client_id,
                target_uri=c.target_uri,
                sid=c.sid,
                sub=c.subject,
                alg=c.alg,
            ),
        )
        for c in claims
    ]
    outbox.record_results(db.factory, results, "sim", settings, now=now)
    return len(claims)


def next_due(db: DB, ids: list[int]) -> dt.datetime | None:
    with db.factory() as s:
        return s.scalar(
            select(func.min(Delivery.next_attempt_at)).where(Delivery.id.in_(ids), Delivery.state == PENDING)
        )


def states(db: DB, ids: list[int]) -> dict[str, int]:
    with db.factory() as s:
        rows = s.execute(
            select(Delivery.state, func.count()).where(Delivery.id.in_(ids)).group_by(Delivery.state)
        )
        return {str(state): int(n) for state, n in rows}


def test_two_minute_rp_outage_with_default_settings_dead_letters_nothing(outbox_db: DB) -> None:
    settings = default_settings()
    server = CaptureServer()
    port = server.port
    server.stop()  # connection refused from now on
    t0 = utcnow()
    uri = f"http://127.0.0.1:{port}/bc"
    ids = outbox_db.add_deliveries([uri] * ROWS, created_at=t0, next_attempt_at=t0)
    http = Poster(dev_mode=True)
    try:
        now, attempts = t0, 0
        for _ in range(500):  # bounded: the backoff makes progress in simulated time
            attempts += deliver_due(outbox_db, settings, now, http)
            due = next_due(outbox_db, ids)
            assert due is not None, states(outbox_db, ids)
            if due >= t0 + OUTAGE:
                break
            now = max(due, now + dt.timedelta(milliseconds=1))
        assert states(outbox_db, ids) == {PENDING: ROWS}
        # The backoff fitted more attempts into the outage than the old count limit (8) allowed.
        assert attempts > ROWS
        worst = max(outbox_db.get(i).attempts for i in ids)

        server = CaptureServer(port=port)  # the RP is back, on the same port
        now = max(now, t0 + OUTAGE)
        for _ in range(50):
            due = next_due(outbox_db, ids)
            if due is None:
                break
            now = max(now, due)
            deliver_due(outbox_db, settings, now, http)
    finally:
        http.close()
        server.stop()
    assert states(outbox_db, ids) == {DELIVERED: ROWS}, worst
    assert len(server.requests) == ROWS


def test_row_older_than_max_age_goes_dead_with_the_reason(
    outbox_db: DB, rp: RPServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = default_settings()
    old = utcnow() - dt.timedelta(seconds=settings.delivery_max_age + 1)
    (aged,) = outbox_db.add_deliveries([rp.url("/down", Reply(503))], created_at=old, next_attempt_at=old)
    # Many attempts but young: no count limit by default, so it is retried.
    (busy,) = outbox_db.add_deliveries([rp.url("/down2", Reply(503))], attempts=1000)
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, settings)
    try:
        with caplog.at_level(logging.INFO, logger="oidc_logout.delivery"):
            assert disp.run_once(timeout=30) == {"dead": 1, "retry": 1}
    finally:
        disp.stop()
    row = outbox_db.get(aged)
    assert row.state == DEAD and row.last_status == 503
    assert "older than delivery_max_age" in (row.last_error or "")
    assert [a.outcome for a in row.attempt_log] == ["dead"]
    assert outbox_db.get(busy).state == PENDING
    # The attempt that made the row dead is logged as dead, at WARNING, with the reason.
    lines = [r for r in caplog.records if f"delivery {aged} " in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    assert (
        ": dead:" in lines[0].getMessage()
        and "dead letter" in lines[0].getMessage()
        and "older than delivery_max_age" in lines[0].getMessage()
    )


def test_a_permanent_refusal_still_fails_at_once_with_default_settings(outbox_db: DB, rp: RPServer) -> None:
    """§2.8: a 400 for a token that does not validate is final (no retry, whatever the age
    budget); a 400 naming an unknown key is retried (the RP refetches its JWKS)."""
    (refused,) = outbox_db.add_deliveries([rp.url("/bad", Reply(400, body=b'{"error":"invalid_request"}'))])
    (unknown_kid,) = outbox_db.add_deliveries([rp.url("/kid", Reply(400, body=b'{"error":"unknown_kid"}'))])
    disp = Dispatcher(outbox_db.factory, outbox_db.keyring, default_settings())
    try:
        assert disp.run_once(timeout=30) == {"failed": 1, "retry": 1}
    finally:
        disp.stop()
    assert outbox_db.get(refused).state == "failed"
    assert outbox_db.get(unknown_kid).state == PENDING
