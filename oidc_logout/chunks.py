"""Chunked terminations: the per-row work a large termination leaves after its cut-off commits.

A termination by subject, client or credential (:func:`oidc_logout.termination.terminate`)
writes its :class:`~oidc_logout.storage.models.Cutoff` in its own transaction, so its whole
scope is dead at commit. When the scope is larger than ``termination.INLINE_LIMIT`` rows it is
committed as ``running`` and its per-row work (ending sessions and participations, marking
grants and tokens revoked, writing the outbox) is done here, in chunks of
``settings.termination_chunk_size`` rows, each chunk its own transaction that also records the
progress (``progress_phase``, ``progress_cursor``, counters) on the termination row.

Owner: the delivery loop. Every cycle of :class:`~oidc_logout.delivery.dispatcher.Dispatcher`
(the embedded dispatcher thread and every ``oidc-logout worker`` process) calls
:func:`advance` first, which works through running terminations for at most
``settings.termination_chunk_budget`` seconds. So the work starts right after the commit
(``terminate`` NOTIFYs the workers) and a crash between chunks (or inside one: its transaction
rolls back) resumes from the recorded progress at the next cycle of any live loop. A host
without a dispatcher or worker calls :func:`run_pending` itself.

Runners never double anything: a chunk first locks its termination row (PostgreSQL ``FOR
NO KEY UPDATE SKIP LOCKED``: another runner takes another termination or waits for the next cycle;
SQLite: the chunk's first statement is a write, so the database write lock serializes
runners), reads the progress under that lock, and every write of a chunk is conditional
(``ended_at IS NULL``, ``revoked_at IS NULL``), so a chunk replayed after a crash ends, revokes
and tells nothing twice; the outbox is unique per (termination, channel, client, sid).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .config import Settings
from .storage.base import utcnow
from .storage.models import Cutoff, Termination
from .storage.queries import is_lock_contention
from .termination import COMPLETE, PHASES, RUNNING, run_chunk

log = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]


def run_one_chunk(
    session_factory: SessionFactory,
    size: int = 500,
    *,
    termination_id: str | None = None,
    now: dt.datetime | None = None,
) -> str | None:
    """Run the next chunk of one running termination (the oldest one no other runner holds,
    or ``termination_id``) in its own transaction and commit. Returns the termination's id,
    or None when there was nothing to do."""
    with session_factory() as db, db.begin():
        term = _claim(db, termination_id, now or utcnow())
        if term is None:
            return None
        cutoff = db.scalar(
            select(Cutoff).where(Cutoff.termination_id == term.id).order_by(Cutoff.id).limit(1)
        )
        if cutoff is None:  # cannot happen (written with the termination); never loop on it
            log.error("termination %s is running without a cut-off; marking it complete", term.id)
            term.state = COMPLETE
            return term.id
        run_chunk(db, term, cutoff, max(1, size), now)
        return term.id


def _claim(db: Session, termination_id: str | None, now: dt.datetime) -> Termination | None:
    """Lock one running termination for this transaction (see the module docstring)."""
    running = select(Termination.id).where(Termination.state == RUNNING)
    if termination_id is not None:
        running = running.where(Termination.id == termination_id)
    running = running.order_by(Termination.created_at, Termination.id).limit(1)
    if db.get_bind().dialect.name == "postgresql":
        # FOR NO KEY UPDATE: serializes runners without blocking the foreign-key checks
        # (KEY SHARE) of rows that reference the termination, e.g. its outbox rows.
        tid = db.scalar(running.with_for_update(skip_locked=True, key_share=True))
        if tid is None:
            return None
        # Read the row in a statement of its own, after the lock is held: under READ
        # COMMITTED the locking statement's snapshot may predate the commit of the runner
        # that held the lock just before, and its progress and counters read from that
        # snapshot would overwrite that runner's (lost update).
        return db.get(Termination, tid, populate_existing=True)
    # SQLite: write first, so the write lock is ours before we read the progress.
    claimed = db.scalar(
        update(Termination)
        .where(Termination.id == running.scalar_subquery(), Termination.state == RUNNING)
        .values(progress_at=now)
        .returning(Termination.id)
        .execution_options(synchronize_session=False)
    )
    return db.get(Termination, claimed, populate_existing=True) if claimed else None


def run_pending(
    session_factory: SessionFactory,
    size: int = 500,
    *,
    termination_id: str | None = None,
    max_chunks: int | None = None,
) -> int:
    """Run chunks until no termination (or ``termination_id``) is running, or ``max_chunks``
    have run; returns the chunks run. For hosts without a delivery loop, tests and benches."""
    done = 0
    while max_chunks is None or done < max_chunks:
        if run_one_chunk(session_factory, size, termination_id=termination_id) is None:
            break
        done += 1
    return done


def advance(session_factory: SessionFactory, settings: Settings) -> int:
    """The delivery loop's hook: run chunks of running terminations for at most
    ``settings.termination_chunk_budget`` seconds. A failed chunk is logged and the next cycle
    resumes from the recorded progress; only an unreachable database is raised, for the loop's
    backoff. Returns the chunks run."""
    if settings.termination_chunk_budget <= 0:
        return 0  # this loop leaves chunks to other processes
    deadline = time.monotonic() + settings.termination_chunk_budget
    done = 0
    try:
        while run_one_chunk(session_factory, settings.termination_chunk_size) is not None:
            done += 1
            if time.monotonic() >= deadline:
                break
    except Exception as exc:
        if is_lock_contention(exc):
            log.info("termination chunk waited too long for a lock; resuming next cycle")
        elif _unreachable(exc):
            raise  # the delivery loop backs off with one warning line per step
        else:
            log.exception("termination chunk failed; resuming from its recorded progress next cycle")
    return done


def _unreachable(exc: BaseException) -> bool:
    """The database cannot be reached (connection refused or dropped): not this chunk's fault;
    the caller's loop owns backing off from that."""
    from sqlalchemy import exc as sa_exc

    return (
        isinstance(exc, sa_exc.InterfaceError)
        or (isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated))
        or (isinstance(exc, sa_exc.OperationalError) and not is_lock_contention(exc))
    )


def progress(term: Termination) -> dict[str, Any]:
    """How far a termination's per-row work got (the termination report's ``progress``)."""
    phases = PHASES.get(term.target_kind, ())
    return {
        "state": term.state,
        "phase": phases[term.progress_phase] if term.progress_phase < len(phases) else None,
        "cursor": term.progress_cursor,
        "chunks_done": term.chunks_done,
        "deliveries_written": term.deliveries_written,
        "progress_at": term.progress_at.isoformat() if term.progress_at else None,
        "completed_at": term.completed_at.isoformat() if term.completed_at else None,
    }


__all__ = ["advance", "progress", "run_one_chunk", "run_pending"]
