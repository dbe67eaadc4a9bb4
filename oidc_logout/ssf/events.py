"""Security Event Tokens (RFC 8417) in the SSF 1.0 §4 profile, recorded in the caller's
transaction.

Every event is fixed when it happens: one :class:`~oidc_logout.storage.models.SSFEvent` row per
stream with the SET's complete claim set (``jti`` = the row id, so a retransmission is the same
SET and a receiver can deduplicate it, RFC 8417 §2.2). It is signed when sent (:mod:`.push`,
:mod:`.poll`). Push streams get an outbox row (channel ``ssf_push``) in the same transaction:
the SETs exist if and only if what caused them committed, exactly like logout notifications.

Stream status (SSF §8.1.2): an ``enabled`` stream gets the event now; a ``paused`` one holds
it (``held``, sent in order when enabled again, at most :data:`MAX_HELD_EVENTS` kept, oldest
dropped first); a ``disabled`` one "will not hold any events" - nothing is recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from ..delivery.notify import announce
from ..storage.models import Delivery, SSFEvent, SSFStream, SSFSubject, Termination
from ..tokens import new_id
from ..vocabulary import Channel, DeliveryState, TargetKind
from . import (
    ACCOUNT_DISABLED,
    CREDENTIAL_CHANGE,
    PUSH,
    SESSION_REVOKED,
    VERIFICATION,
)
from .subjects import event_subject, matches

__all__ = [
    "HELD",
    "MAX_HELD_EVENTS",
    "QUEUED",
    "initiating_entity",
    "key_rotated",
    "record_account_disabled",
    "record_credential_change",
    "record_key_rotation",
    "record_session_revoked",
    "record_verification",
    "release_held",
    "secret_rotated",
    "user_gone",
]

#: Event states (see :class:`~oidc_logout.storage.models.SSFEvent`).
HELD = "held"
QUEUED = "queued"
SENT = "sent"
ACKED = "acked"

#: CAEP Interoperability Profile §2.3.5: "For streams that are paused, the Transmitter MUST
#: specify (offline) the resource constraints on how many events it can keep" - this many
#: per stream (docs/ssf.md); the oldest held events are dropped first (SSF §8.1.2 allows it).
MAX_HELD_EVENTS = 10_000


def initiating_entity(initiator: str, target_kind: str | None = None) -> str:
    """CAEP §2 ``initiating_entity`` (admin / user / policy / system) of a termination, from
    who started it (:func:`oidc_logout.termination.terminate`'s ``initiator``)."""
    head = initiator.split(":", 1)[0]
    if head in ("end_session", "sign-in"):
        return "user"
    if head in ("admin", "cli", "global_token_revocation"):
        return "admin"
    if head == "expiry" or target_kind == TargetKind.EXPIRY:
        return "policy"
    return "system"


def _reason(text: str) -> dict[str, str]:
    # CAEP §2: reason_admin is an object of BCP47 tag -> message; CAEP Interop §4.1/§4.2: it
    # MUST be populated with a non-empty value.
    return {"en": (text or "unspecified")[:500]}


def _live_streams(db: Session, event_type: str | None) -> list[SSFStream]:
    """Streams that record events: enabled or paused (disabled ones hold nothing), carrying
    ``event_type`` (None: every stream - verification and stream-updated, SSF §8.1.4/§8.1.5)."""
    rows = db.scalars(select(SSFStream).where(SSFStream.status.in_(("enabled", "paused")))).all()
    if event_type is None:
        return list(rows)
    # SSF §8.1.1: events_delivered is the intersection of supported and requested.
    return [s for s in rows if event_type in (s.events_requested or [])]


def _removed_subjects(db: Session, stream_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if not stream_ids:
        return out
    for sid, subject in db.execute(
        select(SSFSubject.stream_id, SSFSubject.subject).where(
            SSFSubject.stream_id.in_(list(stream_ids)), SSFSubject.action == "removed"
        )
    ):
        out.setdefault(sid, []).append(subject)
    return out


class _Batch:
    """Event rows and outbox rows of one recording, inserted together."""

    def __init__(self, db: Session, now: dt.datetime, termination_id: str | None, why: str, who: str) -> None:
        self.db = db
        self.now = now
        self.termination_id = termination_id
        self.why = why
        self.who = who
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.held_streams: set[str] = set()

    def _parent(self) -> str:
        """The termination a push row belongs to: the causing one, else a ``signal`` record."""
        if self.termination_id is None:
            term = Termination(
                id=new_id(12),
                target_kind=TargetKind.SIGNAL,
                target_value=self.why[:255],
                reason=self.why[:2048],
                initiator=self.who[:255],
                include_offline=False,
                created_at=self.now,
            )
            self.db.add(term)
            self.db.flush()
            self.termination_id = term.id
        return self.termination_id

    def add(
        self,
        stream: SSFStream,
        event_type: str,
        sub_id: Mapping[str, Any],
        body: Mapping[str, Any],
        *,
        txn: str | None,
        op_subject: str | None = None,
    ) -> None:
        event_id = new_id(16)
        claims: dict[str, Any] = {
            # SSF §4.1.5: iss matches the stream's iss; RFC 8417 §2.2: iss, iat, jti REQUIRED.
            "iss": stream.iss,
            "jti": event_id,
            "iat": int(self.now.timestamp()),
            # SSF §4.1.7: aud identifies the receiver of the stream.
            "aud": stream.aud,
            # SSF §3.1: the primary subject is the top-level sub_id; §4.1.2: no "sub";
            # §4.1.6: no "exp".
            "sub_id": dict(sub_id),
            # CAEP Interop §2.8.1: exactly one event.
            "events": {event_type: dict(body)},
        }
        if txn:
            # SSF §4.1.8: txn SHOULD be set, unique to the underlying cause.
            claims["txn"] = txn
        state = HELD if stream.status == "paused" else QUEUED
        if state == HELD:
            self.held_streams.add(stream.stream_id)
        self.events.append(
            dict(
                id=event_id,
                stream_id=stream.stream_id,
                termination_id=self.termination_id,
                event_type=event_type,
                claims=claims,
                state=state,
                created_at=self.now,
            )
        )
        if state == QUEUED and stream.delivery_method == PUSH and stream.endpoint_url:
            self.deliveries.append(_push_row(self._parent(), stream, event_id, op_subject, self.now))

    def flush(self) -> int:
        if self.events:
            for ev in self.events:
                ev["termination_id"] = ev["termination_id"] or (
                    self.termination_id if self.deliveries else None
                )
            self.db.execute(insert(SSFEvent), self.events)
        for stream_id in self.held_streams:
            _cap_held(self.db, stream_id)
        if self.deliveries:
            self.db.execute(insert(Delivery), self.deliveries)
            announce(self.db)  # wakes every worker when (and only if) the transaction commits
        return len(self.events)


def _push_row(
    termination_id: str, stream: SSFStream, event_id: str, op_subject: str | None, now: dt.datetime
) -> dict[str, Any]:
    """The outbox row of one pushed SET. ``sid`` holds the SSF event id (the outbox's per-row
    key; :mod:`.push` finds the SET by it), ``subject`` the End-User it is about."""
    return dict(
        termination_id=termination_id,
        channel=Channel.SSF_PUSH,
        client_id=stream.client_id,
        sid=event_id,
        subject=op_subject,
        target_uri=stream.endpoint_url,
        state=DeliveryState.PENDING,
        created_at=now,
        next_attempt_at=now,
        attempts=0,
    )


def _cap_held(db: Session, stream_id: str) -> None:
    n = db.scalar(
        select(func.count())
        .select_from(SSFEvent)
        .where(SSFEvent.stream_id == stream_id, SSFEvent.state == HELD)
    )
    excess = int(n or 0) - MAX_HELD_EVENTS
    if excess > 0:
        oldest = select(SSFEvent.id).where(SSFEvent.stream_id == stream_id, SSFEvent.state == HELD)
        ids = list(db.scalars(oldest.order_by(SSFEvent.created_at, SSFEvent.id).limit(excess)))
        db.execute(delete(SSFEvent).where(SSFEvent.id.in_(ids)))


def record_session_revoked(db: Session, term: Termination, ended: Mapping[str, str], now: dt.datetime) -> int:
    """CAEP §3.1 ``session-revoked`` for every OP session ``term`` ended (``ended``: sid ->
    subject, as the termination's UPDATE returned them), on every stream carrying it; in the
    termination's transaction (called by :func:`oidc_logout.termination.terminate`). Returns
    the SETs recorded."""
    sids = list(ended)
    if not sids:
        return 0
    streams = _live_streams(db, SESSION_REVOKED)
    if not streams:
        return 0
    subjects = ended
    removed = _removed_subjects(db, [s.stream_id for s in streams])
    body = {
        # CAEP §3.1: "When event_timestamp is included, its value MUST represent the time at
        # which the session revocation occurred."
        "event_timestamp": int(now.timestamp()),
        "initiating_entity": initiating_entity(term.initiator, term.target_kind),
        "reason_admin": _reason(term.reason),
    }
    batch = _Batch(db, now, term.id, term.reason, term.initiator)
    for stream in streams:
        for sid in sids:
            sub = subjects.get(sid)
            if sub is None:
                continue
            sub_id = event_subject(stream.subject_format, stream.iss, sub, sid)
            if any(matches(r, sub_id) for r in removed.get(stream.stream_id, [])):
                continue  # SSF §7.1 default_subjects ALL: the receiver removed this subject
            batch.add(stream, SESSION_REVOKED, sub_id, body, txn=term.id, op_subject=sub)
    return batch.flush()


def record_credential_change(
    db: Session,
    *,
    client_id: str,
    credential_type: str,
    change_type: str,
    reason: str,
    initiator: str,
    now: dt.datetime,
    friendly_name: str | None = None,
    termination_id: str | None = None,
) -> int:
    """CAEP §3.3 ``credential-change`` of an OAuth client (a service account or agent: its
    secret rotated). The subject is the client as an ``iss_sub`` identifier: this OP and the
    ``client_id`` (the ``sub`` a client-credentials token stands for)."""
    streams = _live_streams(db, CREDENTIAL_CHANGE)
    if not streams:
        return 0
    body: dict[str, Any] = {
        "credential_type": credential_type,
        "change_type": change_type,
        "event_timestamp": int(now.timestamp()),
        "initiating_entity": initiating_entity(initiator),
        "reason_admin": _reason(reason),
    }
    if friendly_name:
        body["friendly_name"] = friendly_name[:255]
    removed = _removed_subjects(db, [s.stream_id for s in streams])
    batch = _Batch(db, now, termination_id, reason, initiator)
    txn = termination_id or new_id(12)
    for stream in streams:
        sub_id = {"format": "iss_sub", "iss": stream.iss, "sub": client_id}
        if any(matches(r, sub_id) for r in removed.get(stream.stream_id, [])):
            continue
        batch.add(stream, CREDENTIAL_CHANGE, sub_id, body, txn=txn)
    return batch.flush()


def record_key_rotation(db: Session, *, kid: str, alg: str, now: dt.datetime, initiator: str) -> int:
    """CAEP §3.3 ``credential-change`` of the OP's own signing credential: a new ``alg`` key
    ``kid`` was created (``change_type`` ``create``). The subject is this OP (RFC 9493 ``uri``,
    its issuer); ``credential_type`` ``jwk`` is an extension value ("any other credential type
    supported mutually", CAEP §3.3): receivers caching the JWKS learn to refetch it."""
    streams = _live_streams(db, CREDENTIAL_CHANGE)
    if not streams:
        return 0
    reason = f"{alg} signing key rotated; new key {kid}"
    body = {
        "credential_type": "jwk",
        "change_type": "create",
        "friendly_name": f"{alg} signing key {kid}",
        "event_timestamp": int(now.timestamp()),
        "initiating_entity": initiating_entity(initiator),
        "reason_admin": _reason(reason),
    }
    batch = _Batch(db, now, None, reason, initiator)
    txn = new_id(12)
    for stream in streams:
        batch.add(stream, CREDENTIAL_CHANGE, {"format": "uri", "uri": stream.iss}, body, txn=txn)
    return batch.flush()


def record_account_disabled(
    db: Session, *, sub: str, reason: str, initiator: str, now: dt.datetime, termination_id: str | None = None
) -> int:
    """RISC ``account-disabled`` (OpenID RISC Event Types 1.0 §2.3) for ``sub``: the user
    directory says the account no longer exists. Recorded once per subject and stream."""
    streams = _live_streams(db, ACCOUNT_DISABLED)
    if not streams:
        return 0
    already = set(
        db.scalars(
            select(SSFEvent.stream_id).where(
                SSFEvent.event_type == ACCOUNT_DISABLED,
                SSFEvent.stream_id.in_([s.stream_id for s in streams]),
                SSFEvent.claims["sub_id"]["sub"].as_string() == sub,
            )
        )
    )
    removed = _removed_subjects(db, [s.stream_id for s in streams])
    batch = _Batch(db, now, termination_id, reason, initiator)
    txn = termination_id or new_id(12)
    for stream in streams:
        if stream.stream_id in already:
            continue
        fmt = stream.subject_format if stream.subject_format in ("iss_sub", "email") else "iss_sub"
        sub_id = event_subject(fmt, stream.iss, sub)
        if any(matches(r, sub_id) for r in removed.get(stream.stream_id, [])):
            continue
        batch.add(stream, ACCOUNT_DISABLED, sub_id, {}, txn=txn, op_subject=sub)
    return batch.flush()


def record_verification(db: Session, stream: SSFStream, state: str | None, now: dt.datetime) -> str:
    """SSF §8.1.4.1 verification event on ``stream`` (sent whatever the stream requested);
    returns its ``jti``. ``sub_id`` is ``opaque`` with the ``stream_id`` (§8.1.4.1)."""
    body = {"state": state} if state is not None else {}
    batch = _Batch(db, now, None, "SSF stream verification", f"ssf:{stream.client_id}")
    batch.add(stream, VERIFICATION, {"format": "opaque", "id": stream.stream_id}, body, txn=None)
    batch.flush()
    return str(batch.events[0]["id"])


def release_held(db: Session, stream: SSFStream, now: dt.datetime) -> int:
    """A paused stream became enabled (SSF §8.1.2: held events "SHOULD [be transmitted] when
    the stream's status becomes enabled", in the order they were generated): held events
    become queued; a push stream gets their outbox rows now, oldest first."""
    held = list(
        db.scalars(
            select(SSFEvent)
            .where(SSFEvent.stream_id == stream.stream_id, SSFEvent.state == HELD)
            .order_by(SSFEvent.created_at, SSFEvent.id)
        )
    )
    if not held:
        return 0
    batch = _Batch(db, now, None, "SSF stream resumed: held events", f"ssf:{stream.client_id}")
    for ev in held:
        ev.state = QUEUED
        if stream.delivery_method == PUSH and stream.endpoint_url:
            parent = ev.termination_id or batch._parent()
            ev.termination_id = parent
            sub = ev.claims.get("sub_id", {})
            user = sub.get("user", sub) if isinstance(sub, dict) else {}
            batch.deliveries.append(
                _push_row(parent, stream, ev.id, user.get("sub") if isinstance(user, dict) else None, now)
            )
    db.flush()
    batch.flush()
    return len(held)


def secret_rotated(db: Session, client_id: str, *, reason: str, initiator: str, now: dt.datetime) -> int:
    """The hook of :meth:`oidc_logout.provider.Provider.rotate_client_secret`: a CAEP
    credential-change (``client_secret``, ``update``) of the client."""
    return record_credential_change(
        db,
        client_id=client_id,
        credential_type="client_secret",
        change_type="update",
        reason=reason,
        initiator=initiator,
        now=now,
    )


def key_rotated(db: Session, *, kid: str, alg: str, initiator: str, now: dt.datetime | None = None) -> int:
    """The hook of ``oidc-logout rotate-key``: a CAEP credential-change of the OP's key."""
    from ..storage.base import utcnow

    return record_key_rotation(db, kid=kid, alg=alg, now=now or utcnow(), initiator=initiator)


def user_gone(session_factory: Any, request_db: Session, sub: str) -> None:
    """The hook of the token endpoint when the user directory no longer has ``sub`` (its
    ``exists`` said no): a RISC account-disabled for every stream carrying it, once per
    subject. The refused token request's transaction is ended first (it changes nothing
    anyway), so the event's own transaction waits for no lock it holds. Never raises: a
    failure here must not turn a refusal into a server error."""
    import logging

    from ..storage.base import utcnow

    request_db.rollback()
    try:
        with session_factory.begin() as db:
            record_account_disabled(
                db,
                sub=sub,
                reason="the user directory no longer has this account",
                initiator="user directory",
                now=utcnow(),
            )
    except Exception:
        logging.getLogger(__name__).exception("recording account-disabled failed")
