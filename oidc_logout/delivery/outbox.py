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

Cost per delivery (see docs/performance.md): a claim is one statement sequence for a whole
batch (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING ...``; on
SQLite one atomic ``UPDATE ... RETURNING``), and :func:`record_results` writes the results of
many attempts in one transaction (one fenced ``UPDATE ... RETURNING id`` per group of rows
that end the same way, one multi-row ``INSERT`` into ``delivery_attempt``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Engine,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from ..backchannel.request import AttemptResult
from ..config import Settings
from ..storage.base import UTCDateTime, utcnow
from ..storage.models import (
    BACKCHANNEL,
    DEAD,
    DELIVERED,
    FAILED,
    FINAL_STATES,
    IN_FLIGHT,
    PENDING,
    PENDING_BACKCHANNEL_PREDICATE,
    Client,
    Delivery,
    DeliveryAttempt,
)
from ..vocabulary import PUSHED_CHANNELS, AttemptOutcome, DeliveryState, sql_literal
from . import policy

__all__ = [
    "LOST",
    "ClaimedDelivery",
    "claim_due",
    "claim_rows",
    "defer",
    "final_states",
    "id_chunks",
    "list_deliveries",
    "progress",
    "record_result",
    "record_result_detail",
    "record_results",
    "release",
    "renew_leases",
    "retry_now",
    "summary",
]

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
    channel: str = BACKCHANNEL
    #: When the row was due (its ``next_attempt_at`` at the claim): the older, the sooner it
    #: is attempted among the claims a dispatcher holds (a crashed worker's rows come first).
    due_at: dt.datetime | None = None


def _claimable(now: dt.datetime, due: dt.datetime | None = None) -> Any:
    """Pending rows due by ``due`` (default ``now``), and in-flight rows whose lease expired
    at ``now`` (a crashed worker's claim)."""
    return and_(
        Delivery.channel.in_(PUSHED_CHANNELS),
        or_(
            and_(Delivery.state == PENDING, Delivery.next_attempt_at <= (now if due is None else due)),
            and_(
                Delivery.state == IN_FLIGHT, or_(Delivery.lease_until.is_(None), Delivery.lease_until < now)
            ),
        ),
    )


def _claimed(row: Any, alg: str | None) -> ClaimedDelivery:
    """A claimed row (ORM entity or Core row: the same attribute names) with its client's alg."""
    return ClaimedDelivery(
        id=row.id,
        client_id=row.client_id,
        sid=row.sid,
        subject=row.subject,
        target_uri=row.target_uri,
        alg=alg or "RS256",
        attempts=row.attempts,
        created_at=row.created_at,
        termination_id=row.termination_id,
        lease_until=row.lease_until,
        channel=row.channel,
        due_at=row.next_attempt_at,
    )


def _snapshots(
    db: Session, owner: str, lease_until: dt.datetime, ids: Sequence[int]
) -> list[ClaimedDelivery]:
    if not ids:
        return []
    rows = db.execute(
        select(Delivery, Client.id_token_signed_response_alg)
        .join(Client, Client.client_id == Delivery.client_id)
        .where(Delivery.id.in_(ids), Delivery.lease_owner == owner, Delivery.lease_until == lease_until)
        .order_by(Delivery.id)
    ).all()
    return [_claimed(d, alg) for d, alg in rows]


_T = cast(Table, Delivery.__table__)
_C = cast(Table, Client.__table__)
_A = cast(Table, DeliveryAttempt.__table__)
_SNAPSHOT_COLUMNS = (
    _T.c.id,
    _T.c.client_id,
    _T.c.sid,
    _T.c.subject,
    _T.c.target_uri,
    _T.c.attempts,
    _T.c.created_at,
    _T.c.termination_id,
    _T.c.lease_until,
    _T.c.channel,
    _T.c.next_attempt_at,
)


#: The signing alg of each of a claim's clients (built once: an expanding parameter, so the
#: compiled form is cached).
_CLIENT_ALGS = select(_C.c.client_id, _C.c.id_token_signed_response_alg).where(
    _C.c.client_id.in_(bindparam("ids", expanding=True))
)


def _returned_snapshots(db: Session, rows: Sequence[Any]) -> list[ClaimedDelivery]:
    """Snapshots from ``UPDATE ... RETURNING`` rows, with each client's signing alg (one
    query for the whole batch). A row whose client vanished is skipped, as the join of
    :func:`_snapshots` does (its lease expires)."""
    if not rows:
        return []
    algs = dict(db.execute(_CLIENT_ALGS, {"ids": sorted({r.client_id for r in rows})}).all())
    return sorted(
        (_claimed(r, algs[r.client_id]) for r in rows if r.client_id in algs),
        key=lambda c: c.id,
    )


def _due_pending(now: dt.datetime) -> Any:
    """Due pending back-channel rows: exactly the predicate of ``ix_delivery_pending_due``
    (a partial index on ``(next_attempt_at, id)``), so the ordered ``LIMIT`` reads the index."""
    return and_(
        Delivery.state == PENDING, Delivery.channel.in_(PUSHED_CHANNELS), Delivery.next_attempt_at <= now
    )


def _lease_expired(now: dt.datetime) -> Any:
    """In-flight rows whose lease expired (few: at most the claims held by all workers; the
    ``state`` prefix of ``ix_delivery_due`` finds them)."""
    return and_(
        Delivery.state == IN_FLIGHT,
        Delivery.channel.in_(PUSHED_CHANNELS),
        or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
    )


# -- PostgreSQL: one statement per claim and per batch of results -------------------------
#
# On PostgreSQL a claim and a batch of results are each ONE statement run in autocommit mode (a
# single statement is atomic): no BEGIN/COMMIT round trips, no separate snapshot query. The
# locking and fencing are those of the generic path: ``FOR UPDATE SKIP LOCKED`` in the
# claim's CTEs, the lease fence in the UPDATE's WHERE, and an attempt row inserted only for
# the rows that UPDATE returned (a data-modifying CTE feeding the INSERT).

# The vocabulary's words as SQL literals: the statement text is built from the same members
# the models map, so a renamed state cannot leave a stale string behind in raw SQL.
_IN_FLIGHT, _PENDING = sql_literal(DeliveryState.IN_FLIGHT), sql_literal(DeliveryState.PENDING)
_PUSHED = ", ".join(sql_literal(c) for c in PUSHED_CHANNELS)
# Table names from the models (one place to rename them).
_DELIVERY, _ATTEMPT, _CLIENT = Delivery.__tablename__, DeliveryAttempt.__tablename__, Client.__tablename__

_PG_CLAIM = f"""
WITH expired AS (
    SELECT id, next_attempt_at, 0 AS k FROM {_DELIVERY}
    WHERE state = {_IN_FLIGHT} AND channel IN ({_PUSHED})
      AND (lease_until IS NULL OR lease_until < :now) {{only}}
    ORDER BY next_attempt_at, id LIMIT :lim FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id, next_attempt_at, 1 AS k FROM {_DELIVERY}
    WHERE {PENDING_BACKCHANNEL_PREDICATE} AND next_attempt_at <= :due {{only}}
    ORDER BY next_attempt_at, id LIMIT :lim FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT * FROM expired UNION ALL SELECT * FROM due) AS p
    ORDER BY k, next_attempt_at, id LIMIT :lim
)
UPDATE {_DELIVERY} AS d SET state = {_IN_FLIGHT}, lease_owner = :owner, lease_until = :lease_until
FROM picked, {_CLIENT} AS c
WHERE d.id = picked.id AND c.client_id = d.client_id
RETURNING d.id, d.client_id, d.sid, d.subject, d.target_uri, d.attempts, d.created_at,
          d.termination_id, d.lease_until, d.next_attempt_at, c.id_token_signed_response_alg AS alg,
          d.channel
"""

_PG_RECORD = text(f"""
WITH v AS (
    SELECT * FROM unnest(CAST(:ids AS BIGINT[]), CAST(:lease AS TIMESTAMPTZ[]),
                         CAST(:states AS VARCHAR[]), CAST(:attempts AS INTEGER[]),
                         CAST(:statuses AS INTEGER[]), CAST(:errors AS VARCHAR[]),
                         CAST(:completed AS TIMESTAMPTZ[]), CAST(:next_at AS TIMESTAMPTZ[]),
                         CAST(:started AS TIMESTAMPTZ[]), CAST(:durations AS INTEGER[]),
                         CAST(:outcomes AS VARCHAR[]), CAST(:jtis AS VARCHAR[]))
        AS t (id, lease_until, state, attempts, last_status, last_error, completed_at,
              next_attempt_at, started_at, duration_ms, outcome, jti)
), upd AS (
    UPDATE {_DELIVERY} AS d SET state = v.state, attempts = v.attempts, lease_owner = NULL,
        lease_until = NULL, last_status = v.last_status, last_error = v.last_error,
        completed_at = v.completed_at,
        next_attempt_at = COALESCE(v.next_attempt_at, d.next_attempt_at)
    FROM v
    WHERE d.id = v.id AND d.state = {_IN_FLIGHT} AND d.lease_owner = :owner
      AND d.lease_until = v.lease_until
    RETURNING d.id
)
INSERT INTO {_ATTEMPT} (delivery_id, number, started_at, duration_ms, http_status,
                              outcome, error, jti, worker)
SELECT v.id, v.attempts, v.started_at, v.duration_ms, v.last_status, v.outcome,
       v.last_error, v.jti, :worker
FROM v JOIN upd ON upd.id = v.id
RETURNING delivery_id
""")

_UTC = UTCDateTime()


def _pg_claim_stmt(only: bool) -> Any:
    stmt = text(_PG_CLAIM.format(only="AND id = ANY(:ids)" if only else ""))
    stmt = stmt.bindparams(
        bindparam("now", type_=_UTC), bindparam("due", type_=_UTC), bindparam("lease_until", type_=_UTC)
    )
    return stmt.columns(created_at=_UTC, lease_until=_UTC, next_attempt_at=_UTC)


#: The claim statement, without and with an ``ids`` restriction (built once: the SQL text
#: is constant, so SQLAlchemy's and psycopg's statement caches apply).
_PG_CLAIM_STMTS = {False: _pg_claim_stmt(False), True: _pg_claim_stmt(True)}


# -- SQLite: the claim as one constant statement ----------------------------------------------
#
# One atomic UPDATE: SQLite holds the write lock for the whole statement, so the re-check of
# the claimable condition in its WHERE is the compare-and-set. The candidates come from two
# ordered LIMITs, expired leases first, then due pending rows through the partial index
# ``ix_delivery_pending_due`` (as on PostgreSQL): one ORDER BY over the OR of both scanned and
# sorted every pending row per claim, which made a 100,000-row fan-out crawl. The re-check is
# a CASE: written as an OR, SQLite drove the UPDATE by that OR through the state index (every
# pending row, ~0.5 s per claim at 100,000) instead of by the candidate ids; a CASE cannot
# drive an index. Written once as text: built from SQLAlchemy constructs per call it cost 4.9
# ms of Python per claim (statement building and cache keys), a third of a bulk termination's
# database CPU (docs/performance.md); the predicates are literal. The clients' algs come after,
# from :data:`_CLIENT_ALGS` (SQLite's RETURNING names only the updated table, and plans a
# correlated subquery in it as a scan of the client table).
_SQLITE_CLAIM = f"""
UPDATE {_DELIVERY} SET state = {_IN_FLIGHT}, lease_owner = :owner, lease_until = :lease_until
WHERE id IN (
    SELECT id FROM (
        SELECT 0 AS k, id FROM (
            SELECT id FROM {_DELIVERY}
            WHERE state = {_IN_FLIGHT} AND channel IN ({_PUSHED})
              AND (lease_until IS NULL OR lease_until < :now) {{only}}
            ORDER BY next_attempt_at, id LIMIT :lim)
        UNION ALL
        SELECT 1 AS k, id FROM (
            SELECT id FROM {_DELIVERY}
            WHERE {PENDING_BACKCHANNEL_PREDICATE} AND next_attempt_at <= :due {{only}}
            ORDER BY next_attempt_at, id LIMIT :lim)
    ) ORDER BY k LIMIT :lim)
  AND channel IN ({_PUSHED})
  AND CASE WHEN state = {_PENDING} THEN next_attempt_at <= :due
           WHEN state = {_IN_FLIGHT} THEN (lease_until IS NULL OR lease_until < :now)
           ELSE 0 END
RETURNING id, client_id, sid, subject, target_uri, attempts, created_at, termination_id,
          lease_until, channel, next_attempt_at
"""


def _sqlite_claim_stmt(only: bool) -> Any:
    params = [
        bindparam("now", type_=_UTC),
        bindparam("due", type_=_UTC),
        bindparam("lease_until", type_=_UTC),
    ]
    if only:
        params.append(bindparam("ids", expanding=True))
    stmt = text(_SQLITE_CLAIM.format(only="AND id IN :ids" if only else "")).bindparams(*params)
    return stmt.columns(created_at=_UTC, lease_until=_UTC, next_attempt_at=_UTC)


#: The claim statement, without and with an ``ids`` restriction (built once).
_SQLITE_CLAIM_STMTS = {False: _sqlite_claim_stmt(False), True: _sqlite_claim_stmt(True)}


def _pg_engine(session_factory: SessionFactory) -> Engine | None:
    """The Engine behind ``session_factory`` if it is PostgreSQL (else None: generic path)."""
    bind = getattr(session_factory, "kw", {}).get("bind")  # a sessionmaker: no Session needed
    if bind is None:
        with session_factory() as db:
            bind = db.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        return bind
    return None


def _pg_claim(
    engine: Engine,
    owner: str,
    limit: int,
    now: dt.datetime,
    due: dt.datetime,
    lease_until: dt.datetime,
    id_list: list[int] | None,
) -> list[ClaimedDelivery]:
    params: dict[str, Any] = dict(now=now, due=due, lease_until=lease_until, lim=limit, owner=owner)
    if id_list is not None:
        params["ids"] = id_list
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.execute(_PG_CLAIM_STMTS[id_list is not None], params).all()
    return sorted(
        (_claimed(r, r.alg) for r in rows),
        key=lambda c: c.id,
    )


def _pg_record(
    engine: Engine,
    items: Sequence[tuple[ClaimedDelivery, AttemptResult]],
    plans: Sequence[tuple[str, str, dict[str, Any], dt.datetime | None]],
    owner: str,
) -> set[int]:
    """Indexes of ``items`` whose fence held (and whose attempt row was inserted). One
    parameter array per column (``unnest``): the statement text is the same whatever the
    batch size."""
    results = [r for _c, r in items]
    values = [p[2] for p in plans]
    params: dict[str, Any] = {
        "owner": owner,
        "worker": owner[:64],
        "ids": [c.id for c, _r in items],
        "lease": [c.lease_until for c, _r in items],
        "states": [v["state"] for v in values],
        "attempts": [v["attempts"] for v in values],
        "statuses": [v["last_status"] for v in values],
        "errors": [v["last_error"] for v in values],
        "completed": [v["completed_at"] for v in values],
        "next_at": [p[3] for p in plans],
        "started": [r.started_at for r in results],
        "durations": [r.duration_ms for r in results],
        "outcomes": [p[1] for p in plans],
        "jtis": [r.jti for r in results],
    }
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        hit = set(conn.execute(_PG_RECORD, params).scalars())
    return {n for n, (c, _r) in enumerate(items) if c.id in hit}


def claim_due(
    session_factory: SessionFactory,
    owner: str,
    limit: int,
    lease_seconds: float,
    ids: Iterable[int] | None = None,
    *,
    now: dt.datetime | None = None,
    due_by: dt.datetime | None = None,
) -> list[ClaimedDelivery]:
    """Claim up to ``limit`` due back-channel rows (only among ``ids`` if given) for ``owner``
    for ``lease_seconds``, in one short committed transaction. Attempts are not counted yet
    (that happens when the result is recorded). Rows whose lease expired come first (they
    are the oldest work), then due pending rows by ``next_attempt_at, id``.

    ``now`` is the clock (default: the real one; tests inject a simulated time); ``due_by``
    (at most ``now``) restricts pending rows to those due by then, e.g. "due when this run
    started", so a retry scheduled during the run is not claimed again by it."""
    if limit <= 0:
        return []
    id_list = list(ids) if ids is not None else None
    if id_list is not None and not id_list:
        return []
    now = now or utcnow()
    due = now if due_by is None else min(now, due_by)
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    pg = _pg_engine(session_factory)
    if pg is not None:
        claimed = _pg_claim(pg, owner, limit, now, due, lease_until, id_list)
        if claimed:
            logger.debug("%s claimed %d deliveries", owner, len(claimed))
        return claimed
    claim_values = dict(state=IN_FLIGHT, lease_owner=owner, lease_until=lease_until)
    with session_factory() as db, db.begin():
        dialect = db.get_bind().dialect
        only = Delivery.id.in_(id_list) if id_list is not None else None

        def pick(cond: Any, n: int) -> Any:
            q = select(Delivery.id).where(cond if only is None else and_(cond, only))
            return q.order_by(Delivery.next_attempt_at, Delivery.id).limit(n)

        if dialect.name == "postgresql":
            # (A Session bound to a Connection, not an Engine: the same claim in the caller's
            # transaction.) Locked rows belong to another claimer right now: skip them.
            # Expired leases first (rare; a crashed worker's rows), then due pending rows
            # through the partial index (the OR of the two never could use an index).
            picked = list(
                db.scalars(pick(_lease_expired(now), limit).with_for_update(skip_locked=True)).all()
            )
            if len(picked) < limit:
                picked += db.scalars(
                    pick(_due_pending(due), limit - len(picked)).with_for_update(skip_locked=True)
                ).all()
            if not picked:
                return []
            rows = db.execute(
                update(_T).where(_T.c.id.in_(picked)).values(**claim_values).returning(*_SNAPSHOT_COLUMNS)
            ).all()
            claimed = _returned_snapshots(db, rows)
        elif dialect.name == "sqlite" and dialect.update_returning:
            # One atomic statement, constant text (_SQLITE_CLAIM_STMTS).
            params: dict[str, Any] = dict(now=now, due=due, lease_until=lease_until, lim=limit, owner=owner)
            if id_list is not None:
                params["ids"] = id_list
            rows = db.execute(_SQLITE_CLAIM_STMTS[id_list is not None], params).all()
            claimed = _returned_snapshots(db, rows)
        else:
            cond = _claimable(now, due)
            candidates = db.scalars(pick(cond, limit)).all()
            claimed_ids = []
            for row_id in candidates:
                # Compare-and-set: only if the row is still claimable right now.
                res = db.execute(
                    update(Delivery)
                    .where(Delivery.id == row_id, _claimable(now, due))
                    .values(**claim_values)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    claimed_ids.append(row_id)
            claimed = _snapshots(db, owner, lease_until, claimed_ids)
    if claimed:
        logger.debug("%s claimed %d deliveries", owner, len(claimed))
    return claimed


def claim_rows(
    db: Session,
    owner: str,
    ids: Iterable[int],
    lease_seconds: float,
    *,
    now: dt.datetime | None = None,
) -> list[ClaimedDelivery]:
    """Claim the pending pushed rows among ``ids`` for ``owner`` **in the caller's
    transaction** (does not commit): the claim of the rows a termination has just written,
    made inside that termination's transaction (:meth:`.Dispatcher.claim_for_delivery`).

    The claim is exactly the durable one of :func:`claim_due` - ``in_flight``, ``lease_owner``,
    ``lease_until`` (the fencing token of every later write) - and it becomes visible only if
    the caller commits, together with the rows themselves; a rollback takes both back. So the
    rows reach the dispatcher of the process that wrote them without a second write
    transaction (on SQLite: without taking the write lock again) and without waking a polling
    thread, and if that process dies after the commit its rows come back when the lease
    expires, as for any claim. One ``UPDATE ... RETURNING`` per :data:`_IN_CHUNK` ids (on
    PostgreSQL with the clients' signing algs; elsewhere one more query reads them)."""
    chunks = id_chunks(ids)
    if not chunks:
        return []
    now = now or utcnow()
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    claimable = and_(_T.c.state == PENDING, _T.c.channel.in_(PUSHED_CHANNELS), _T.c.next_attempt_at <= now)
    values = dict(state=IN_FLIGHT, lease_owner=owner, lease_until=lease_until)
    claimed: list[ClaimedDelivery] = []
    dialect = db.get_bind().dialect
    returning = dialect.update_returning
    for chunk in chunks:
        if dialect.name == "postgresql":
            # UPDATE ... FROM the client table, its alg in RETURNING: one round trip, as the
            # claim loop's (_PG_CLAIM); a row whose client vanished is not claimed (SQLite's
            # RETURNING cannot name a FROM table, so it reads the algs in a second query).
            rows = db.execute(
                update(_T)
                .where(_T.c.id.in_(chunk), claimable, _T.c.client_id == _C.c.client_id)
                .values(**values)
                .returning(*_SNAPSHOT_COLUMNS, _C.c.id_token_signed_response_alg)
            ).all()
            claimed += sorted((_claimed(r, r.id_token_signed_response_alg) for r in rows), key=lambda c: c.id)
        elif returning:
            rows = db.execute(
                update(_T).where(_T.c.id.in_(chunk), claimable).values(**values).returning(*_SNAPSHOT_COLUMNS)
            ).all()
            claimed += _returned_snapshots(db, rows)
        else:
            db.execute(update(_T).where(_T.c.id.in_(chunk), claimable).values(**values))
            claimed += _snapshots(db, owner, lease_until, chunk)
    return claimed


def record_result(
    session_factory: SessionFactory,
    claimed: ClaimedDelivery,
    result: AttemptResult,
    owner: str,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
) -> str:
    """Write one attempt and the row's next state, in one transaction, only if the row is
    still leased by ``owner`` under this claim. Returns the new state, or :data:`LOST`."""
    return record_result_detail(session_factory, claimed, result, owner, settings, now=now)[0]


def record_result_detail(
    session_factory: SessionFactory,
    claimed: ClaimedDelivery,
    result: AttemptResult,
    owner: str,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
) -> tuple[str, dt.datetime | None]:
    """:func:`record_result` that also returns the ``next_attempt_at`` of a retry."""
    return record_results(session_factory, [(claimed, result)], owner, settings, now=now)[0]


#: The columns every result writes (:func:`_plan`'s values; a retry adds ``next_attempt_at``).
_RESULT_COLUMNS = (
    "state",
    "attempts",
    "lease_owner",
    "lease_until",
    "last_status",
    "last_error",
    "completed_at",
)


def _plan(
    claimed: ClaimedDelivery, result: AttemptResult, settings: Settings, now: dt.datetime
) -> tuple[DeliveryState, AttemptOutcome, dict[str, Any], dt.datetime | None]:
    """(new state, attempt outcome, column values, next_attempt_at) of one attempt's result."""
    attempts = claimed.attempts + 1
    next_at: dt.datetime | None = None
    error = result.error
    state: DeliveryState
    outcome: AttemptOutcome
    if result.outcome == AttemptOutcome.DELIVERED:
        state, outcome = DeliveryState.DELIVERED, AttemptOutcome.DELIVERED
    elif result.outcome == AttemptOutcome.FAILED:
        state, outcome = DeliveryState.FAILED, AttemptOutcome.FAILED
    elif reason := policy.give_up_reason(
        attempts=attempts,
        created_at=claimed.created_at,
        now=now,
        max_attempts=settings.delivery_max_attempts,
        max_age=settings.delivery_max_age,
    ):
        # The attempt that makes the row dead is recorded as ``dead`` (not ``retry``), with
        # the reason next to the RP's answer.
        state, outcome = DeliveryState.DEAD, AttemptOutcome.DEAD
        error = f"{error}; {reason}" if error else reason
    else:
        state, outcome = DeliveryState.PENDING, AttemptOutcome.RETRY
        next_at = policy.next_attempt_at(
            now=now,
            attempts=attempts,
            base=settings.delivery_backoff_base,
            cap=settings.delivery_backoff_cap,
            retry_after=result.retry_after,
            retry_after_cap=settings.delivery_retry_after_cap,
        )
        # No retry later than the row's age limit: the last attempt happens at it.
        next_at = max(now, min(next_at, claimed.created_at + dt.timedelta(seconds=settings.delivery_max_age)))
    values: dict[str, Any] = {
        "state": state,
        "attempts": attempts,
        "lease_owner": None,
        "lease_until": None,
        "last_status": result.http_status,
        "last_error": error,
        "completed_at": None if state == PENDING else now,
    }
    assert tuple(values) == _RESULT_COLUMNS  # the prebuilt result UPDATEs write exactly these
    if next_at is not None:
        values["next_attempt_at"] = next_at
    return state, outcome, values, next_at


def record_results(
    session_factory: SessionFactory,
    items: Sequence[tuple[ClaimedDelivery, AttemptResult]],
    owner: str,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
) -> list[tuple[str, dt.datetime | None]]:
    """Record the results of several attempts in ONE transaction; per item, exactly what
    :func:`record_result_detail` does: the row's next state is written only if the row is
    still ``in_flight`` under this claim (same owner, same ``lease_until`` - the fencing
    token), and an attempt row is inserted only for rows so written. Returns, per item,
    ``(new state, next_attempt_at)`` or ``(LOST, None)``.

    On PostgreSQL this is one statement (:data:`_PG_RECORD`); elsewhere one transaction
    (:func:`_record_generic`)."""
    if not items:
        return []
    now = now or utcnow()
    plans = [_plan(c, r, settings, now) for c, r in items]
    pg = _pg_engine(session_factory)
    if pg is not None:
        won = _pg_record(pg, items, plans, owner)  # indexes into items
    else:
        won = _record_generic(session_factory, items, plans, owner)
    out: list[tuple[str, dt.datetime | None]] = []
    for n, (c, r) in enumerate(items):
        if n in won:
            out.append((plans[n][0], plans[n][3]))
        else:
            logger.warning(
                "delivery %s: lease lost by %s before its result (%s) was recorded", c.id, owner, r.outcome
            )
            out.append((LOST, None))
    return out


def _record_generic(
    session_factory: SessionFactory,
    items: Sequence[tuple[ClaimedDelivery, AttemptResult]],
    plans: Sequence[tuple[str, str, dict[str, Any], dt.datetime | None]],
    owner: str,
) -> set[int]:
    """One transaction: per group of rows that end the same way under the same claim, one
    fenced ``UPDATE ... RETURNING id`` (per-row UPDATEs where RETURNING is unsupported),
    then one multi-row INSERT of the attempts of the rows so written."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for n, ((c, _r), (_s, _o, values, _n)) in enumerate(zip(items, plans)):
        groups.setdefault((c.lease_until, tuple(sorted(values.items()))), []).append(n)
    won: set[int] = set()
    with session_factory() as db, db.begin():
        returning = db.get_bind().dialect.update_returning
        for (lease_until, _), members in groups.items():
            values = plans[members[0]][2]
            fence = and_(_T.c.state == IN_FLIGHT, _T.c.lease_owner == owner, _T.c.lease_until == lease_until)
            if returning:
                params = {f"v_{k}": v for k, v in values.items()}
                params.update(ids=sorted({items[n][0].id for n in members}), owner=owner, fence=lease_until)
                hit = set(db.execute(_RECORD_UPDATES["next_attempt_at" in values], params).scalars())
                won.update(n for n in members if items[n][0].id in hit)
            else:
                for n in members:
                    res = db.execute(update(_T).where(_T.c.id == items[n][0].id, fence).values(**values))
                    if res.rowcount == 1:  # type: ignore[attr-defined]
                        won.add(n)
        attempt_rows = [
            dict(
                delivery_id=c.id,
                number=c.attempts + 1,
                started_at=r.started_at,
                duration_ms=r.duration_ms,
                http_status=r.http_status,
                outcome=plans[n][1],
                error=plans[n][2]["last_error"],
                jti=r.jti,
                worker=owner[:64],
            )
            for n, (c, r) in enumerate(items)
            if n in won
        ]
        if attempt_rows:
            db.execute(_ATTEMPT_INSERT, attempt_rows)
    return won


def _record_update(next_at: bool) -> Any:
    """One group's fenced ``UPDATE ... RETURNING id``, built once (a statement built per
    batch cost more Python than the write): values, ids and fence are parameters."""
    columns = [*_RESULT_COLUMNS, "next_attempt_at"] if next_at else list(_RESULT_COLUMNS)
    return (
        update(_T)
        .where(
            _T.c.id.in_(bindparam("ids", expanding=True)),
            _T.c.state == IN_FLIGHT,
            _T.c.lease_owner == bindparam("owner"),
            _T.c.lease_until == bindparam("fence", type_=_T.c.lease_until.type),
        )
        .values({c: bindparam(f"v_{c}", type_=_T.c[c].type) for c in columns})
        .returning(_T.c.id)
    )


#: The fenced result UPDATE without and with a ``next_attempt_at`` (a retry), and the
#: attempts' INSERT, each built once.
_RECORD_UPDATES = {False: _record_update(False), True: _record_update(True)}
_ATTEMPT_INSERT = insert(_A)


def renew_leases(
    session_factory: SessionFactory,
    owner: str,
    ids: Iterable[int],
    lease_seconds: float,
    *,
    now: dt.datetime | None = None,
) -> tuple[set[int], dt.datetime]:
    """The lease heartbeat: extend, in ONE ``UPDATE``, the leases of ``ids`` that are still
    ``in_flight`` and owned by ``owner``, to ``now + lease_seconds``. Returns the ids renewed
    and the new ``lease_until``; a row missing from the answer is no longer ours (finished,
    or re-claimed by someone else after our lease ran out) and must not be renewed again.

    A claim's lease no longer has to outlast its slowest attempt: a live owner keeps it
    fresh every ``lease_seconds / 4``, so a short lease only bounds how long the rows of a
    *dead* owner wait (docs/operations.md, "Leases and at-least-once delivery"). The new
    ``lease_until`` is also the new fencing token of those rows: the caller must record
    their results with it."""
    id_list = sorted(set(ids))
    now = now or utcnow()
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    if not id_list:
        return set(), lease_until
    mine = and_(_T.c.id.in_(id_list), _T.c.state == IN_FLIGHT, _T.c.lease_owner == owner)
    with session_factory() as db, db.begin():
        if db.get_bind().dialect.update_returning:
            renewed = set(
                db.execute(
                    update(_T).where(mine).values(lease_until=lease_until).returning(_T.c.id)
                ).scalars()
            )
        else:
            db.execute(update(_T).where(mine).values(lease_until=lease_until))
            renewed = set(db.scalars(select(_T.c.id).where(mine, _T.c.lease_until == lease_until)))
    return renewed, lease_until


def release(session_factory: SessionFactory, claimed: Iterable[ClaimedDelivery], owner: str) -> int:
    """Give back claims that were never attempted (graceful shutdown): pending, due now."""
    return _give_back(session_factory, claimed, owner, None)


def defer(
    session_factory: SessionFactory, claimed: Iterable[ClaimedDelivery], owner: str, until: dt.datetime
) -> int:
    """Give back claims that were not attempted because a per-client or per-host bound was
    reached (see :mod:`.dispatcher`): pending again, due at ``until``, attempt count unchanged.
    Fenced like a result (same owner and lease)."""
    return _give_back(session_factory, claimed, owner, until)


def _give_back(
    session_factory: SessionFactory,
    claimed: Iterable[ClaimedDelivery],
    owner: str,
    until: dt.datetime | None,
) -> int:
    """Claims back to ``pending`` (due at ``until``, or as they were), fenced by owner and lease."""
    values: dict[str, Any] = {"state": PENDING, "lease_owner": None, "lease_until": None}
    if until is not None:
        values["next_attempt_at"] = until
    n = 0
    with session_factory() as db, db.begin():
        for c in claimed:
            res = db.execute(
                update(Delivery)
                .where(
                    Delivery.id == c.id,
                    Delivery.state == IN_FLIGHT,
                    Delivery.lease_owner == owner,
                    Delivery.lease_until == c.lease_until,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            n += res.rowcount  # type: ignore[attr-defined]
    return n


def resume_client(session_factory: SessionFactory, client_id: str, now: dt.datetime) -> int:
    """An RP that failed has accepted a delivery again: its pending back-channel rows waiting
    out a backoff or its retry budget become due now (the RP is healthy; its users should not
    stay logged in for the rest of a backoff)."""
    with session_factory() as db, db.begin():
        res = db.execute(
            update(Delivery)
            .where(
                Delivery.client_id == client_id,
                Delivery.channel.in_(PUSHED_CHANNELS),
                Delivery.state == PENDING,
                Delivery.next_attempt_at > now,
            )
            .values(next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(res.rowcount or 0)  # type: ignore[attr-defined]


def retry_now(db: Session, states: Sequence[str] = (FAILED, DEAD), ids: Iterable[int] | None = None) -> int:
    """Operator-requested retry: matching back-channel rows go back to ``pending``, due now.

    ``attempts`` and ``created_at`` are kept (the attempt log numbers stay unique), so a row
    that went dead by age (or by the optional attempt cap) gets exactly one more attempt; a
    retryable failure of that attempt makes it dead again. In-flight rows are never touched. Does not commit.
    """
    allowed = [s for s in states if s != IN_FLIGHT]
    if not allowed:
        return 0
    stmt = (
        update(Delivery)
        .where(Delivery.channel.in_(PUSHED_CHANNELS), Delivery.state.in_(allowed))
        .values(
            state=PENDING, next_attempt_at=utcnow(), completed_at=None, lease_owner=None, lease_until=None
        )
        .execution_options(synchronize_session=False)
    )
    statements = [stmt] if ids is None else [stmt.where(Delivery.id.in_(c)) for c in id_chunks(ids)]
    requeued = 0
    for one in statements:
        requeued += int(db.execute(one).rowcount)  # type: ignore[attr-defined]
    return requeued


def summary(db: Session, channel: str | None = BACKCHANNEL) -> dict[str, int]:
    """Row counts per state (all known back-channel states present, zeros included)."""
    counts: dict[str, int] = {str(s): 0 for s in (PENDING, IN_FLIGHT, DELIVERED, FAILED, DEAD)}
    q = select(Delivery.state, func.count()).group_by(Delivery.state)
    if channel is not None:
        q = q.where(Delivery.channel == channel)
    for state, n in db.execute(q):
        counts[str(state)] = int(n)
    return counts


def list_deliveries(
    db: Session,
    states: Sequence[str] | None = None,
    *,
    channel: str | None = BACKCHANNEL,
    limit: int = 100,
    newest_first: bool = False,
) -> list[Delivery]:
    """Rows in ``states`` (all if None) of ``channel`` (all if None), oldest first unless
    ``newest_first``, for the CLI and admin API."""
    q = select(Delivery).order_by(Delivery.id.desc() if newest_first else Delivery.id).limit(limit)
    if states:
        q = q.where(Delivery.state.in_(list(states)))
    if channel is not None:
        q = q.where(Delivery.channel == channel)
    return list(db.scalars(q))


def final_states(db: Session, ids: Iterable[int]) -> dict[int, str]:
    """{id: state} for those of ``ids`` that reached a final state. Asked in chunks of
    :data:`_IN_CHUNK` ids (a 100,000-row fan-out must not become one statement with 100,000
    parameters: SQLite refuses more than 32,766)."""
    out: dict[int, str] = {}
    for chunk in id_chunks(ids):
        rows = db.execute(
            select(Delivery.id, Delivery.state).where(
                Delivery.id.in_(chunk), Delivery.state.in_(list(FINAL_STATES))
            )
        )
        out.update((row_id, state) for row_id, state in rows)
    return out


def progress(db: Session, ids: Iterable[int]) -> dict[int, tuple[str, int]]:
    """{id: (state, attempts)} for those of ``ids`` still in the outbox: whether a row has had
    an attempt since an earlier look (``attempts`` counts recorded attempts), whoever made it.
    Asked in chunks of :data:`_IN_CHUNK` ids, as :func:`final_states`."""
    out: dict[int, tuple[str, int]] = {}
    for chunk in id_chunks(ids):
        rows = db.execute(
            select(Delivery.id, Delivery.state, Delivery.attempts).where(Delivery.id.in_(chunk))
        )
        out.update((row_id, (str(state), int(attempts))) for row_id, state, attempts in rows)
    return out


#: Ids per ``IN (...)`` of a statement over a list of rows (SQLite refuses more than 32,766
#: parameters in one statement).
_IN_CHUNK = 5000


def id_chunks(ids: Iterable[int]) -> list[list[int]]:
    """``ids``, sorted and without repeats, in lists of at most :data:`_IN_CHUNK`: one
    ``IN (...)`` each."""
    id_list = sorted(set(ids))
    return [id_list[i : i + _IN_CHUNK] for i in range(0, len(id_list), _IN_CHUNK)]
