"""What an operator looks up: recent terminations (search by subject or client), deliveries
by state and channel, and the requeue of a dead letter. Framework-free: the admin API
(:mod:`oidc_logout.flask.admin_views`) and the operator console
(:mod:`oidc_logout.flask.console`) adapt these; the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from .delivery.notify import announce
from .delivery.outbox import retry_now
from .errors import InvalidRequest, NotFound
from .provider import delivery_to_dict
from .storage.models import Delivery, OPSession, Termination
from .vocabulary import Channel, DeliveryState, TargetKind

__all__ = [
    "MAX_LIMIT",
    "DeliveryQuery",
    "TerminationQuery",
    "list_deliveries",
    "list_terminations",
    "parse_delivery_query",
    "parse_termination_query",
    "requeue",
]

#: The most rows one list answers (a page, not a dump).
MAX_LIMIT = 500
#: Rows a list answers when no ``limit`` is given.
DEFAULT_LIMIT = 50
#: States an operator may requeue (the final back-channel failures).
REQUEUEABLE = (DeliveryState.DEAD, DeliveryState.FAILED)


@dataclass(frozen=True)
class TerminationQuery:
    subject: str | None = None
    client_id: str | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class DeliveryQuery:
    states: tuple[DeliveryState, ...] = ()
    channel: Channel | None = None
    client_id: str | None = None
    termination_id: str | None = None
    limit: int = DEFAULT_LIMIT


def _text(args: Mapping[str, str], name: str, longest: int) -> str | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    if len(value) > longest or not value.isprintable():
        raise InvalidRequest(f"'{name}' must be printable and at most {longest} characters")
    return value


def _limit(args: Mapping[str, str]) -> int:
    raw = args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        n = int(raw)
    except ValueError:
        raise InvalidRequest("'limit' must be an integer") from None
    if not 1 <= n <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be between 1 and {MAX_LIMIT}")
    return n


def parse_termination_query(args: Mapping[str, str]) -> TerminationQuery:
    """``subject``, ``client_id``, ``limit`` of ``GET /admin/terminations`` (or the console's
    search form); a bad value is an ``invalid_request``."""
    return TerminationQuery(_text(args, "subject", 255), _text(args, "client_id", 64), _limit(args))


def parse_delivery_query(args: Mapping[str, str]) -> DeliveryQuery:
    """``state`` (comma-separated), ``channel``, ``client_id``, ``termination_id``, ``limit``
    of ``GET /admin/deliveries``."""
    states: list[DeliveryState] = []
    for word in (args.get("state") or "").split(","):
        word = word.strip()
        if not word:
            continue
        try:
            states.append(DeliveryState(word))
        except ValueError:
            raise InvalidRequest(
                f"'state' must be one of {', '.join(s.value for s in DeliveryState)}"
            ) from None
    channel_word = (args.get("channel") or "").strip()
    channel = None
    if channel_word:
        try:
            channel = Channel(channel_word)
        except ValueError:
            raise InvalidRequest(f"'channel' must be one of {', '.join(c.value for c in Channel)}") from None
    return DeliveryQuery(
        tuple(states),
        channel,
        _text(args, "client_id", 64),
        _text(args, "termination_id", 40),
        _limit(args),
    )


def _ts(v: dt.datetime | None) -> str | None:
    return v.isoformat() if v else None


def list_terminations(db: Session, query: TerminationQuery) -> list[dict[str, Any]]:
    """Newest first: each termination with its target, cause, who asked and a per-state count
    of its deliveries. ``subject``: terminations that named the subject or ended one of its
    sessions or notified an RP about it; ``client_id``: terminations that named the client or
    notified it."""
    q = select(Termination).order_by(Termination.created_at.desc(), Termination.id.desc()).limit(query.limit)
    if query.subject is not None:
        q = q.where(
            or_(
                (Termination.target_kind == TargetKind.SUBJECT) & (Termination.target_value == query.subject),
                exists().where(
                    OPSession.termination_id == Termination.id, OPSession.subject == query.subject
                ),
                exists().where(Delivery.termination_id == Termination.id, Delivery.subject == query.subject),
            )
        )
    if query.client_id is not None:
        q = q.where(
            or_(
                Termination.target_kind.in_([TargetKind.CLIENT, TargetKind.CREDENTIAL])
                & (Termination.target_value == query.client_id),
                exists().where(
                    Delivery.termination_id == Termination.id, Delivery.client_id == query.client_id
                ),
            )
        )
    terms = list(db.scalars(q))
    counts: dict[str, dict[str, int]] = {t.id: {} for t in terms}
    if terms:
        rows = db.execute(
            select(Delivery.termination_id, Delivery.state, func.count())
            .where(Delivery.termination_id.in_(list(counts)))
            .group_by(Delivery.termination_id, Delivery.state)
        ).all()
        for term_id, state, n in rows:
            counts[term_id][str(state)] = int(n)
    return [
        {
            "id": t.id,
            "created_at": _ts(t.created_at),
            "target": {"kind": str(t.target_kind), "value": t.target_value},
            "reason": t.reason,
            "initiator": t.initiator,
            "include_offline": t.include_offline,
            "sessions_ended": t.sessions_ended,
            "tokens_revoked": t.tokens_revoked,
            "delivery_summary": counts[t.id],
        }
        for t in terms
    ]


def list_deliveries(db: Session, query: DeliveryQuery, *, attempts: bool = False) -> list[dict[str, Any]]:
    """Newest first, filtered by state(s), channel, client and termination."""
    q = select(Delivery).order_by(Delivery.id.desc()).limit(query.limit)
    if query.states:
        q = q.where(Delivery.state.in_(list(query.states)))
    if query.channel is not None:
        q = q.where(Delivery.channel == query.channel)
    if query.client_id is not None:
        q = q.where(Delivery.client_id == query.client_id)
    if query.termination_id is not None:
        q = q.where(Delivery.termination_id == query.termination_id)
    if attempts:
        q = q.options(selectinload(Delivery.attempt_log))
    return [delivery_to_dict(d, attempts=attempts) for d in db.scalars(q)]


def requeue(db: Session, delivery_ids: Sequence[int]) -> int:
    """Dead or failed back-channel rows back to pending, due now (the outbox's operator retry
    path, :func:`oidc_logout.delivery.outbox.retry_now`); wakes the workers on commit.
    Raises :class:`NotFound` when none of ``delivery_ids`` exists, and ``invalid_request``
    when none of them can be requeued (delivered, pending, in flight, or front-channel)."""
    ids = list(delivery_ids)
    n = retry_now(db, states=REQUEUEABLE, ids=ids)
    if n == 0:
        found = db.scalar(select(func.count()).select_from(Delivery).where(Delivery.id.in_(ids)))
        if not found:
            raise NotFound("no delivery with that id")
        raise InvalidRequest("only dead or failed back-channel deliveries can be requeued")
    announce(db)
    return n
