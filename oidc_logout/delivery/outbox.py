"""Queries of the delivery outbox (the ``delivery`` and ``delivery_attempt`` tables).

Claiming and recording are their own short transactions (they take a session factory):
a claim must be committed before the slow HTTP call starts, and a result must be written
whether or not anything else happens. The remaining helpers take a Session and never
commit (the caller owns the transaction, as everywhere in :mod:`oidc_logout.storage`).

Concurrency model: a claim moves a row to ``in_flight`` with ``lease_owner`` and
``lease_until``. ``lease_until`` doubles as a fencing token: a result is written only if the
row is still ``in_flight`` with the same owner *and* the same ``lease_until`` as when it was
claimed, so a worker whose lease expired (and whose row was re-claimed) cannot overwrite the
newer claimant's outcome.

* PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` - concurrent claimers never wait for
  each other and never get the same row.
* SQLite and others: a conditional ``UPDATE ... WHERE id=? AND <still claimable>`` per row
  (compare-and-set); SQLite ignores ``FOR UPDATE`` but serializes writers, so a row whose
  CAS matched zero rows was taken by someone else.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from ..backchannel.request import DELIVERED as R_DELIVERED
from ..backchannel.request import FAILED as R_FAILED
from ..backchannel.request import AttemptResult
from ..config import Settings
from ..storage.base import utcnow
from ..storage.models import (
    BACKCHANNEL,
    DEAD,
    DELIVERED,
    FAILED,
    FINAL_STATES,
    IN_FLIGHT,
    PENDING,
    Client,
    Delivery,
    DeliveryAttempt,
)
from . import policy

__all__ = ["LOST", "ClaimedDelivery", "claim_due", "final_states", "list_deliveries",
           "record_result", "record_result_detail", "release", "retry_now", "summary"]

logger = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]

#: Returned by :func:`record_result` when the lease was lost (nothing was written).
LOST = "lost"


@dataclass(frozen=True)
class ClaimedDelivery:
    """A snapshot of a claimed row: everything one attempt needs, detached from any Session."""

    id: int
    client_id: str
    sid: str | None
    subject: str | None
    target_uri: str
    alg: str
    attempts: int
    created_at: dt.datetime
    termination_id: str = ""
    lease_until: dt.datetime | None = None


def _claimable(now: dt.datetime) -> Any:
    """Due pending rows, and in-flight rows whose lease expired (a crashed worker's claim)."""
    return and_(
        Delivery.channel == BACKCHANNEL,
        or_(
            and_(Delivery.state == PENDING, Delivery.next_attempt_at <= now),
            and_(Delivery.state == IN_FLIGHT,
                 or_(Delivery.lease_until.is_(None), Delivery.lease_until < now)),
        ),
    )


def _snapshots(db: Session, owner: str, lease_until: dt.datetime,
               ids: Sequence[int]) -> list[ClaimedDelivery]:
    if not ids:
        return []
    rows = db.execute(
        select(Delivery, Client.id_token_signed_response_alg)
        .join(Client, Client.client_id == Delivery.client_id)
        .where(Delivery.id.in_(ids), Delivery.lease_owner == owner,
               Delivery.lease_until == lease_until)
        .order_by(Delivery.id)
    ).all()
    return [
        ClaimedDelivery(
            id=d.id, client_id=d.client_id, sid=d.sid, subject=d.subject,
            target_uri=d.target_uri, alg=alg or "RS256", attempts=d.attempts,
            created_at=d.created_at, termination_id=d.termination_id, lease_until=d.lease_until,
        )
        for d, alg in rows
    ]


def claim_due(session_factory: SessionFactory, owner: str, limit: int, lease_seconds: int,
              ids: Iterable[int] | None = None) -> list[ClaimedDelivery]:
    """Claim up to ``limit`` due back-channel rows (only among ``ids`` if given) for ``owner``
    for ``lease_seconds``, in one short committed transaction. Attempts are not counted yet
    (that happens when the result is recorded)."""
    if limit <= 0:
        return []
    id_list = list(ids) if ids is not None else None
    if id_list is not None and not id_list:
        return []
    now = utcnow()
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    with session_factory() as db, db.begin():
        cond = _claimable(now)
        if id_list is not None:
            cond = and_(cond, Delivery.id.in_(id_list))
        if db.get_bind().dialect.name == "postgresql":
            # Locked rows belong to another claimer right now: skip them, do not wait.
            picked = db.scalars(
                select(Delivery.id).where(cond)
                .order_by(Delivery.next_attempt_at, Delivery.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if picked:
                db.execute(
                    update(Delivery).where(Delivery.id.in_(picked))
                    .values(state=IN_FLIGHT, lease_owner=owner, lease_until=lease_until)
                    .execution_options(synchronize_session=False)
                )
            claimed_ids = list(picked)
        else:
            candidates = db.scalars(
                select(Delivery.id).where(cond)
                .order_by(Delivery.next_attempt_at, Delivery.id).limit(limit)
            ).all()
            claimed_ids = []
            for row_id in candidates:
                # Compare-and-set: only if the row is still claimable right now.
                res = db.execute(
                    update(Delivery).where(Delivery.id == row_id, _claimable(now))
                    .values(state=IN_FLIGHT, lease_owner=owner, lease_until=lease_until)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    claimed_ids.append(row_id)
        claimed = _snapshots(db, owner, lease_until, claimed_ids)
    if claimed:
        logger.debug("%s claimed %d deliveries", owner, len(claimed))
    return claimed


def record_result(session_factory: SessionFactory, claimed: ClaimedDelivery,
                  result: AttemptResult, owner: str, settings: Settings,
                  *, now: dt.datetime | None = None) -> str:
    """Write one attempt and the row's next state, in one transaction, only if the row is
    still leased by ``owner`` under this claim. Returns the new state, or :data:`LOST`."""
    return record_result_detail(session_factory, claimed, result, owner, settings, now=now)[0]


def record_result_detail(session_factory: SessionFactory, claimed: ClaimedDelivery,
                         result: AttemptResult, owner: str, settings: Settings,
                         *, now: dt.datetime | None = None) -> tuple[str, dt.datetime | None]:
    """:func:`record_result` that also returns the ``next_attempt_at`` of a retry."""
    now = now or utcnow()
    attempts = claimed.attempts + 1
    next_at: dt.datetime | None = None
    if result.outcome == R_DELIVERED:
        state = outcome = DELIVERED
    elif result.outcome == R_FAILED:
        state = outcome = FAILED
    elif policy.is_exhausted(attempts=attempts, created_at=claimed.created_at, now=now,
                             max_attempts=settings.delivery_max_attempts,
                             max_age=settings.delivery_max_age):
        state = outcome = DEAD
    else:
        state, outcome = PENDING, "retry"
        next_at = policy.next_attempt_at(
            now=now, attempts=attempts, base=settings.delivery_backoff_base,
            cap=settings.delivery_backoff_cap, retry_after=result.retry_after,
            retry_after_cap=settings.delivery_retry_after_cap)
    values: dict[str, Any] = {
        "state": state,
        "attempts": attempts,
        "lease_owner": None,
        "lease_until": None,
        "last_status": result.http_status,
        "last_error": result.error,
        "completed_at": None if state == PENDING else now,
    }
    if next_at is not None:
        values["next_attempt_at"] = next_at
    with session_factory() as db, db.begin():
        res = db.execute(
            update(Delivery)
            .where(Delivery.id == claimed.id, Delivery.state == IN_FLIGHT,
                   Delivery.lease_owner == owner, Delivery.lease_until == claimed.lease_until)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            logger.warning("delivery %s: lease lost by %s before its result (%s) was recorded",
                           claimed.id, owner, result.outcome)
            return LOST, None
        db.add(DeliveryAttempt(
            delivery_id=claimed.id, number=attempts, started_at=result.started_at,
            duration_ms=result.duration_ms, http_status=result.http_status, outcome=outcome,
            error=result.error, jti=result.jti, worker=owner[:64],
        ))
    return state, next_at


def release(session_factory: SessionFactory, claimed: Iterable[ClaimedDelivery],
            owner: str) -> int:
    """Give back claims that were never attempted (graceful shutdown): pending, due now."""
    n = 0
    with session_factory() as db, db.begin():
        for c in claimed:
            res = db.execute(
                update(Delivery)
                .where(Delivery.id == c.id, Delivery.state == IN_FLIGHT,
                       Delivery.lease_owner == owner, Delivery.lease_until == c.lease_until)
                .values(state=PENDING, lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            n += res.rowcount  # type: ignore[attr-defined]
    return n


def retry_now(db: Session, states: Sequence[str] = (FAILED, DEAD),
              ids: Iterable[int] | None = None) -> int:
    """Operator-requested retry: matching back-channel rows go back to ``pending``, due now.

    ``attempts`` is kept (the attempt log numbers stay unique), so a row that went dead by
    the attempt budget gets exactly one more attempt; a retryable failure of that attempt
    makes it dead again. In-flight rows are never touched. Does not commit.
    """
    allowed = [s for s in states if s != IN_FLIGHT]
    if not allowed:
        return 0
    stmt = (
        update(Delivery)
        .where(Delivery.channel == BACKCHANNEL, Delivery.state.in_(allowed))
        .values(state=PENDING, next_attempt_at=utcnow(), completed_at=None,
                lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    if ids is not None:
        id_list = list(ids)
        if not id_list:
            return 0
        stmt = stmt.where(Delivery.id.in_(id_list))
    return int(db.execute(stmt).rowcount)  # type: ignore[attr-defined]


def summary(db: Session, channel: str | None = BACKCHANNEL) -> dict[str, int]:
    """Row counts per state (all known back-channel states present, zeros included)."""
    counts = {s: 0 for s in (PENDING, IN_FLIGHT, DELIVERED, FAILED, DEAD)}
    q = select(Delivery.state, func.count()).group_by(Delivery.state)
    if channel is not None:
        q = q.where(Delivery.channel == channel)
    for state, n in db.execute(q):
        counts[state] = int(n)
    return counts


def list_deliveries(db: Session, states: Sequence[str] | None = None, *,
                    channel: str | None = BACKCHANNEL, limit: int = 100) -> list[Delivery]:
    """Rows in ``states`` (all if None), oldest first, for the CLI and admin API."""
    q = select(Delivery).order_by(Delivery.id).limit(limit)
    if states:
        q = q.where(Delivery.state.in_(list(states)))
    if channel is not None:
        q = q.where(Delivery.channel == channel)
    return list(db.scalars(q))


def final_states(db: Session, ids: Iterable[int]) -> dict[int, str]:
    """{id: state} for those of ``ids`` that reached a final state."""
    id_list = list(ids)
    if not id_list:
        return {}
    rows = db.execute(select(Delivery.id, Delivery.state).where(
        Delivery.id.in_(id_list), Delivery.state.in_(list(FINAL_STATES))))
    return {i: s for i, s in rows}
