"""Prometheus metrics of the OP and its workers (``prometheus-client``, the ``op`` extra).

Counters and histograms count what *this process* did and live in prometheus-client's default
registry (so a host that already exposes it gets ours too). The outbox gauges are different:
any process may have written the rows, so they are computed from the database at scrape time
by :class:`OutboxCollector` and are the same whichever process answers the scrape.

Multi-process servers (gunicorn with several workers): set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty, writable directory *before* the server starts (prometheus-client decides at import time)
and call :func:`gunicorn_child_exit` from gunicorn's ``child_exit`` hook; :func:`exposition`
then merges the files of every process (prometheus-client's multiprocess mode). See
docs/operations.md, "Metrics".

Instrumented code calls the small functions below (one line at each point); a count tied to
a database change is taken only once that change commits (:func:`after_commit`), so a
rolled-back termination is not counted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.orm import Session

from .vocabulary import Channel

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DELIVERIES",
    "DELIVERY_DURATION",
    "LOGOUT_WAIT",
    "REVOCATIONS",
    "TERMINATIONS",
    "OutboxCollector",
    "after_commit",
    "cause_of",
    "delivery_done",
    "exposition",
    "frontchannel_settled",
    "gunicorn_child_exit",
    "logout_waited",
    "revoked",
    "termination_committed",
]

#: The closed set of ``cause`` label values (bounded cardinality whatever the initiator says).
CAUSES = ("end_session", "admin", "cli", "expiry", "sign_in", "token_reuse", "revocation", "other")
_CAUSE_OF_PREFIX = {
    "end_session": "end_session",
    "admin": "admin",
    "cli": "cli",
    "expiry": "expiry",
    "sign-in": "sign_in",
    "token endpoint": "token_reuse",
    "client": "revocation",
}

TERMINATIONS = Counter(
    "oidc_logout_terminations",
    "Committed terminations (sessions ended / grants revoked), by what started them.",
    ["cause"],
)
DELIVERIES = Counter(
    "oidc_logout_deliveries",
    "Logout notifications settled by an attempt or a browser report, by channel and outcome "
    "(back-channel: delivered, retry, failed, dead, lost, error; front-channel: confirmed, unconfirmed).",
    ["channel", "outcome"],
)
DELIVERY_DURATION = Histogram(
    "oidc_logout_delivery_duration_seconds",
    "Duration of one back-channel delivery attempt (token, POST, reply), by outcome.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
REVOCATIONS = Counter(
    "oidc_logout_revocations",
    "Tokens revoked by their client at the RFC 7009 revocation endpoint, by token kind.",
    ["kind"],
)
LOGOUT_WAIT = Histogram(
    "oidc_logout_logout_wait_seconds",
    "How long a logout (end_session, admin or CLI termination) waited for its back-channel "
    "deliveries before answering; settled=false: the wait bound was reached first.",
    ["settled"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)

_BACK_OUTCOMES = ("delivered", "retry", "failed", "dead", "lost", "error")
_FRONT_OUTCOMES = ("confirmed", "unconfirmed")


def _preinitialize() -> None:
    """Every label set starts at 0, so ``rate()`` and alerts see a series before its first event."""
    for cause in CAUSES:
        TERMINATIONS.labels(cause)
    for outcome in _BACK_OUTCOMES:
        DELIVERIES.labels(Channel.BACKCHANNEL.value, outcome)
    for outcome in _FRONT_OUTCOMES:
        DELIVERIES.labels(Channel.FRONTCHANNEL.value, outcome)
    for kind in ("access_token", "refresh_token"):
        REVOCATIONS.labels(kind)


_preinitialize()


# -- counting after commit -----------------------------------------------------------------
_PENDING_KEY = "oidc_logout.metrics.after_commit"
_listening = False
_listen_lock = threading.Lock()


def _run_pending(session: Session) -> None:
    for fn in session.info.pop(_PENDING_KEY, ()):
        try:
            fn()
        except Exception:  # pragma: no cover - a metric must never break a commit
            logging.getLogger(__name__).exception("counting a committed change failed")


def _drop_pending(session: Session, *_args: Any) -> None:
    session.info.pop(_PENDING_KEY, None)


def after_commit(db: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once ``db``'s transaction commits; forget it if it rolls back."""
    global _listening
    if not _listening:
        with _listen_lock:
            if not _listening:
                event.listen(Session, "after_commit", _run_pending)
                event.listen(Session, "after_rollback", _drop_pending)
                _listening = True
    db.info.setdefault(_PENDING_KEY, []).append(fn)


# -- the instrumentation points --------------------------------------------------------------
def cause_of(initiator: str) -> str:
    """The ``cause`` label of a termination's initiator (``admin:<client>`` -> ``admin``)."""
    prefix = initiator.split(":", 1)[0].strip()
    return _CAUSE_OF_PREFIX.get(prefix, "other")


def termination_committed(db: Session, initiator: str) -> None:
    """:func:`oidc_logout.termination.terminate` wrote a termination in ``db``'s transaction."""
    cause = cause_of(initiator)
    after_commit(db, lambda: TERMINATIONS.labels(cause).inc())


def delivery_done(channel: str, state: str, seconds: float | None = None) -> None:
    """One delivery attempt was recorded with the row's new ``state`` (``pending`` = a retry)."""
    outcome = "retry" if state == "pending" else str(state)
    DELIVERIES.labels(str(channel), outcome).inc()
    if seconds is not None:
        DELIVERY_DURATION.labels(outcome).observe(max(0.0, seconds))


def frontchannel_settled(db: Session, confirmed: int, unconfirmed: int) -> None:
    """Front-channel rows settled (a browser report or the stale sweep) in ``db``'s transaction."""

    def count() -> None:
        if confirmed:
            DELIVERIES.labels(Channel.FRONTCHANNEL.value, "confirmed").inc(confirmed)
        if unconfirmed:
            DELIVERIES.labels(Channel.FRONTCHANNEL.value, "unconfirmed").inc(unconfirmed)

    after_commit(db, count)


def revoked(kind: str, db: Session | None = None) -> None:
    """A token was revoked at the RFC 7009 endpoint (counted on ``db``'s commit if given)."""
    label = str(kind) if str(kind) in ("access_token", "refresh_token") else "other"
    if db is None:
        REVOCATIONS.labels(label).inc()
    else:
        after_commit(db, lambda: REVOCATIONS.labels(label).inc())


def logout_waited(seconds: float, settled: bool) -> None:
    """A logout waited ``seconds`` for its back-channel deliveries."""
    LOGOUT_WAIT.labels("true" if settled else "false").observe(max(0.0, seconds))


# -- the database gauges ---------------------------------------------------------------------
class OutboxCollector(Collector):
    """``oidc_logout_outbox_pending`` / ``_dead`` / ``_oldest_due_seconds`` and
    ``oidc_logout_database_up``, read from the database at each scrape (right across
    processes: the outbox is shared). A database that cannot be reached gives
    ``database_up 0`` and no outbox gauges, never a failed scrape."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .health import outbox_backlog

        up = GaugeMetricFamily("oidc_logout_database_up", "1 if the OP database answered this scrape.")
        try:
            with self._session_factory() as db:
                backlog = outbox_backlog(db)
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "oidc_logout_outbox_pending",
            "Back-channel notifications not yet settled (pending or in flight), all processes.",
            value=backlog.pending,
        )
        yield GaugeMetricFamily(
            "oidc_logout_outbox_dead",
            "Back-channel notifications that exhausted their retries (dead letters to requeue).",
            value=backlog.dead,
        )
        yield GaugeMetricFamily(
            "oidc_logout_outbox_oldest_due_seconds",
            "How long the oldest due pending back-channel notification has waited past its due time.",
            value=backlog.oldest_due_lag,
        )


def exposition(session_factory: Callable[[], Session] | None = None) -> tuple[bytes, str]:
    """The text exposition (body, content type) of every metric of this process, or of every
    process in multiprocess mode, plus the outbox gauges when ``session_factory`` is given."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if session_factory is not None:
        db_registry = CollectorRegistry(auto_describe=False)
        db_registry.register(OutboxCollector(session_factory))
        body += generate_latest(db_registry)
    return body, CONTENT_TYPE_LATEST


def gunicorn_child_exit(_server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook (multiprocess mode): forget a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
