"""Termination: THE one operation that ends sessions, revokes tokens and writes the outbox.

Whatever starts it (RP-initiated logout, the admin API, the CLI, session expiry, a client kill
switch, a secret rotation), :func:`terminate` runs inside the caller's transaction and writes:

* the OP sessions it ends (with reason and the termination that ended them),
* the revocation of every refresh and access token that must stop working, through the token
  stores of the engine it runs on (:func:`oidc_logout.token_stores.revoke_tokens`: the
  package's own tables, and a host's in extension mode) -- never a token table directly,
* one :class:`~oidc_logout.storage.models.Termination` audit record,
* one :class:`~oidc_logout.storage.models.Delivery` row per (session, RP) notification
  (a transactional outbox: rows exist if and only if the termination committed).

It never commits and never performs I/O beyond the database; delivery starts after commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import insert, null, select, tuple_, update
from sqlalchemy.orm import Session

from . import metrics
from .delivery.notify import announce
from .errors import InvalidRequest, NotFound
from .host_models import refresh_shadow_clients
from .ssf.events import record_session_revoked
from .storage.base import utcnow
from .storage.models import (
    Client,
    Cutoff,
    Delivery,
    OPSession,
    SessionParticipant,
    Termination,
)
from .token_stores import grant_exists, revoke_tokens, walk_grants, walk_subject_grants
from .tokens import new_id
from .vocabulary import Channel, DeliveryState, TargetKind


@dataclass(frozen=True)
class Sessions:
    """OP sessions by sid: one for an administrator's ``--sid``, two when an RP-initiated logout
    ends the hinted session and the browser's own (still one termination)."""

    sids: tuple[str, ...]
    kind: ClassVar[TargetKind] = TargetKind.SESSIONS

    @property
    def value(self) -> str:
        return " ".join(self.sids)


@dataclass(frozen=True)
class Subject:
    """Every live OP session of a subject, with its grants' tokens."""

    sub: str
    kind: ClassVar[TargetKind] = TargetKind.SUBJECT

    @property
    def value(self) -> str:
        return self.sub


@dataclass(frozen=True)
class ClientKill:
    """The kill switch: every grant of a client (offline and client_credentials included) and
    its participation in every live session."""

    client_id: str
    kind: ClassVar[TargetKind] = TargetKind.CLIENT

    @property
    def value(self) -> str:
        return self.client_id


@dataclass(frozen=True)
class GrantTarget:
    """One grant and every token it produced."""

    grant_id: str
    kind: ClassVar[TargetKind] = TargetKind.GRANT

    @property
    def value(self) -> str:
        return self.grant_id


@dataclass(frozen=True)
class Credential:
    """Grants a client obtained with a secret older than ``below_version`` (secret rotation)."""

    client_id: str
    below_version: int
    kind: ClassVar[TargetKind] = TargetKind.CREDENTIAL

    @property
    def value(self) -> str:
        return self.client_id


@dataclass(frozen=True)
class Expiry:
    """Sessions the expiry sweep found past their idle or absolute lifetime."""

    sids: tuple[str, ...]
    why: str = "expired"
    kind: ClassVar[TargetKind] = TargetKind.EXPIRY

    @property
    def value(self) -> str:
        return self.why


#: What a termination can name: exactly one of these kinds.
Target = Sessions | Subject | ClientKill | GrantTarget | Credential | Expiry


def by_sid(sid: str) -> Sessions:
    return Sessions((sid,))


def by_sessions(sids: Iterable[str]) -> Sessions:
    """Several OP sessions in one termination (duplicates dropped, order kept)."""
    return Sessions(tuple(dict.fromkeys(sids)))


def by_subject(sub: str) -> Subject:
    return Subject(sub)


def by_client(client_id: str) -> ClientKill:
    return ClientKill(client_id)


def by_grant(grant_id: str) -> GrantTarget:
    return GrantTarget(grant_id)


def by_credential(client_id: str, below_version: int) -> Credential:
    return Credential(client_id, below_version)


def by_expiry(sids: Sequence[str], why: str = "expired") -> Expiry:
    return Expiry(tuple(sids), why)


@dataclass
class _Plan:
    sessions: list[str] = field(default_factory=list)  # OP sessions to end
    participations: list[tuple[str, str]] = field(default_factory=list)  # (sid, client_id) only
    grants: list[str] = field(default_factory=list)  # grant ids to revoke (stores with grants)


#: Termination.state: every row done / per-row work left for chunks (oidc_logout.chunks).
COMPLETE = "complete"
RUNNING = "running"
#: A subject, client or credential termination whose every walk (PHASES) finds at most this
#: many rows does its per-row work inline, in its own transaction, as a session logout does:
#: as big as one chunk, so the commit never waits on more than a chunk's rows. Above it, the
#: transaction writes only the termination and its cut-off (O(1)) and chunks do the rest.
INLINE_LIMIT = 500
#: The keyset walks of a chunked termination, in order, per target kind.
PHASES: dict[TargetKind, tuple[str, ...]] = {
    # The subject's sessions, then its grants no ended session reached (offline grants of
    # sessions that ended earlier, grants issued outside a session).
    TargetKind.SUBJECT: ("sessions", "grants"),
    TargetKind.CLIENT: ("participations", "grants"),
    TargetKind.CREDENTIAL: ("grants",),
}


def terminate(
    db: Session,
    target: Target,
    *,
    reason: str,
    initiator: str,
    include_offline: bool = False,
    browser_present: bool = False,
    now: dt.datetime | None = None,
    inline_limit: int = INLINE_LIMIT,
) -> Termination:
    """End what ``target`` names, in the caller's transaction, and return the audit record.

    A termination by subject, client or credential records a :class:`Cutoff` first: every
    token, code and session of its scope is dead when the caller commits. If its scope is
    larger than ``inline_limit`` rows, the returned termination is ``running`` and its per-row
    work (ending sessions and participations, revoking tokens, writing the outbox) is left to
    :func:`run_chunk` (driven by :mod:`oidc_logout.chunks` after commit).

    :param include_offline: also revoke offline_access refresh tokens of ended sessions
        (Back-Channel Logout §2.7 says they normally survive a logout; a client kill or a
        credential rotation always revokes them).
    :param browser_present: a user agent will render the front-channel page for this
        termination; without one, front-channel rows are recorded as not confirmable.
    """
    if not reason or len(reason) > 500:
        raise InvalidRequest("a reason of 1 to 500 characters is required")
    now = now or utcnow()
    plan = _plan(db, target, include_offline)

    if isinstance(target, Sessions) and not plan.sessions:
        # Idempotent: terminating already ended sessions gives back the termination that
        # ended the first of them, so two instances ending one session at once produce one.
        existing = _termination_of(db, target.sids)
        if existing is not None:
            return existing

    term = Termination(
        id=new_id(12),
        target_kind=target.kind,
        target_value=target.value[:255],
        reason=reason,
        initiator=initiator[:255],
        include_offline=include_offline,
        created_at=now,
        state=COMPLETE,
        sessions_ended=0,
        tokens_revoked=0,
        deliveries_written=0,
        chunks_done=0,
        progress_phase=0,
    )
    db.add(term)
    db.flush()

    if isinstance(target, (Subject, ClientKill, Credential)):
        cutoff = Cutoff(
            kind=target.kind,
            value=target.value[:255],
            before=now,
            below_version=target.below_version if isinstance(target, Credential) else None,
            include_offline=include_offline,
            termination_id=term.id,
        )
        db.add(cutoff)
        # Every store gets the subject or client at commit: a host's token rows die in this
        # transaction (one UPDATE by user_id / client_id; the host's validators do not read
        # cut-offs); the package's own rows are refused by the cut-off and marked by chunks.
        term.tokens_revoked += revoke_tokens(
            db,
            subject=target.sub if isinstance(target, Subject) else None,
            client_id=target.client_id if isinstance(target, ClientKill) else None,
            include_offline=include_offline,
            reason=reason,
            now=now,
        )
        db.flush()
        if _fits_inline(db, term, cutoff, inline_limit):
            while run_chunk(db, term, cutoff, inline_limit + 1, now, browser_present):
                pass
        else:
            term.state = RUNNING
            announce(db)  # the workers' loops run the chunks once this commits
        db.flush()
        metrics.termination_committed(db, initiator)
        return term

    ended = _end_sessions(db, term, plan.sessions, reason, now)
    if isinstance(target, Sessions) and plan.sessions and not ended:
        # Lost a race with a concurrent termination of the same sessions: that one ended
        # them (its rows are committed once our conditional UPDATE returned nothing), so give
        # back its record instead of committing an empty one.
        winner = _termination_of(db, target.sids)
        if winner is not None and winner.id != term.id:
            db.delete(term)
            db.flush()
            return winner
    _finish(db, term, plan, ended, now, browser_present)
    db.flush()
    if isinstance(target, GrantTarget) and not term.tokens_revoked:
        # A grant revoked already, or by a concurrent termination (RFC 7009: two revocations
        # of one refresh token): the conditional UPDATEs revoked nothing here, so give back the
        # termination that revoked it, as for sessions above (one revocation, one record).
        winner = _grant_termination(db, target.grant_id, term.id)
        if winner is not None:
            db.delete(term)
            db.flush()
            return winner
    metrics.termination_committed(db, initiator)
    return term


def _end_sessions(
    db: Session, term: Termination, sids: list[str], reason: str, now: dt.datetime
) -> dict[str, str]:
    """End the sessions not ended yet; returns those this call ended, sid -> subject. The
    conditional UPDATE makes a concurrent termination (or chunk) of the same session end it
    once: the loser sees ended_at already set and ends nothing."""
    ended: dict[str, str] = {}
    for chunk in _chunks(sids, 500):
        res = db.execute(
            update(OPSession)
            .where(OPSession.sid.in_(chunk), OPSession.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason[:2048], termination_id=term.id)
            .returning(OPSession.sid, OPSession.subject)
        )
        ended.update((r[0], r[1]) for r in res)
    return ended


def _finish(
    db: Session,
    term: Termination,
    plan: _Plan,
    ended: dict[str, str],
    now: dt.datetime,
    browser_present: bool,
) -> None:
    """Everything after ending the sessions (``ended``: sid -> subject): participations,
    tokens, the outbox, then the termination's counters. The counters are set last, so the
    ORM writes them with the caller's next flush in one UPDATE, not one per counter (each
    query in between would autoflush a changed counter: a round trip each on PostgreSQL)."""
    sids = list(ended)
    notify = _end_participations(db, sids, plan.participations, now)
    # The named grants and the ended sessions' tokens, in every token store of the engine.
    revoked = revoke_tokens(
        db,
        sessions=sids,
        grants=plan.grants,
        include_offline=term.include_offline,
        reason=term.reason,
        now=now,
    )
    written = _write_outbox(db, term, notify, now, browser_present, ended)
    record_session_revoked(db, term, ended, now)  # SSF: a CAEP session-revoked per ended session
    term.sessions_ended += len(ended)
    term.tokens_revoked += revoked
    term.deliveries_written += written


def _end_participations(
    db: Session, ended: list[str], named: list[tuple[str, str]], now: dt.datetime
) -> list[tuple[str, str]]:
    """End every live participation in the ended sessions plus the named ones (client kill
    switch, credential rotation); returns the (sid, client_id) pairs this call ended, i.e.
    who must be told. Conditional (``ended_at IS NULL``), so a pair is told once however many
    terminations or chunks reach it."""
    notify: set[tuple[str, str]] = set()
    for chunk in _chunks(ended, 500):
        res = db.execute(
            update(SessionParticipant)
            .where(SessionParticipant.sid.in_(chunk), SessionParticipant.ended_at.is_(None))
            .values(ended_at=now)
            .returning(SessionParticipant.sid, SessionParticipant.client_id)
            .execution_options(synchronize_session=False)
        )
        notify.update((r[0], r[1]) for r in res)
    for chunk in _chunks(sorted(set(named)), 500):
        res = db.execute(
            update(SessionParticipant)
            .where(
                tuple_(SessionParticipant.sid, SessionParticipant.client_id).in_(chunk),
                SessionParticipant.ended_at.is_(None),
            )
            .values(ended_at=now)
            .returning(SessionParticipant.sid, SessionParticipant.client_id)
            .execution_options(synchronize_session=False)
        )
        notify.update((r[0], r[1]) for r in res)
    return sorted(notify)


def _fits_inline(db: Session, term: Termination, cutoff: Cutoff, limit: int) -> bool:
    """Whether every walk of the termination finds at most ``limit`` rows (a bounded probe:
    it reads at most ``limit + 1`` keys per walk, whatever the scope's size)."""
    return all(
        len(_walk(db, term, cutoff, phase, None, limit + 1)) <= limit
        for phase in range(len(PHASES[term.target_kind]))
    )


def run_chunk(
    db: Session,
    term: Termination,
    cutoff: Cutoff,
    size: int,
    now: dt.datetime | None = None,
    browser_present: bool = False,
) -> bool:
    """Do the next chunk (at most ``size`` keys of the current walk) of a termination's per-row
    work in the caller's transaction and record its progress on ``term``; returns whether work
    is left. Idempotent: every write is conditional (a session ended, a participation ended, a
    grant or token revoked once), so a chunk run twice (a resumed crash, two runners) ends,
    revokes and tells nothing twice."""
    now = now or utcnow()
    phases = PHASES[term.target_kind]
    if term.progress_phase >= len(phases):
        term.state = COMPLETE
        return False
    keys = _walk(db, term, cutoff, term.progress_phase, term.progress_cursor, size)
    plan = _Plan()
    match phases[term.progress_phase]:
        case "sessions":
            plan.sessions = [k for k, _ in keys]
        case "participations":
            plan.participations = [(k, cutoff.value) for k, _ in keys]
        case "grants":
            plan.grants = [k for k, _ in keys]
            if term.target_kind == TargetKind.CREDENTIAL:
                sids = {sid for _, sid in keys if sid}
                plan.participations = _live_participations(db, cutoff.value, sids) if sids else []
    if keys:
        ended = _end_sessions(db, term, plan.sessions, term.reason, now)
        _finish(db, term, plan, ended, now, browser_present)
    if len(keys) < size:
        term.progress_phase += 1
        term.progress_cursor = None
    else:
        term.progress_cursor = keys[-1][0]
    term.chunks_done += 1
    term.progress_at = now
    done = term.progress_phase >= len(phases)
    if done:
        term.state = COMPLETE
        term.completed_at = now
    db.flush()
    return not done


def _walk(
    db: Session, term: Termination, cutoff: Cutoff, phase: int, after: str | None, limit: int
) -> list[tuple[str, str | None]]:
    """The next ``limit`` keys of a walk after ``after``, in key order, each with a sid (or
    None): a keyset page over a composite index, so a chunk costs the same however many rows
    earlier chunks did. Only rows the cut-off covers: what existed at it, not yet done."""
    after = after or ""
    value, before = cutoff.value, cutoff.before
    query: Any  # Select of (key, sid or NULL)
    match (term.target_kind, PHASES[term.target_kind][phase]):
        case (TargetKind.SUBJECT, "sessions"):
            query = (
                select(OPSession.sid, null())
                .where(
                    OPSession.subject == value,
                    OPSession.sid > after,
                    OPSession.ended_at.is_(None),
                    OPSession.created_at <= before,
                )
                .order_by(OPSession.sid)
            )
        case (TargetKind.CLIENT, "participations"):
            query = (
                select(SessionParticipant.sid, null())
                .join(OPSession, OPSession.sid == SessionParticipant.sid)
                .where(
                    SessionParticipant.client_id == value,
                    SessionParticipant.sid > after,
                    SessionParticipant.ended_at.is_(None),
                    SessionParticipant.first_at <= before,
                    OPSession.ended_at.is_(None),
                )
                .order_by(SessionParticipant.sid)
            )
        case (TargetKind.SUBJECT, "grants"):
            return walk_subject_grants(
                db,
                value,
                after=after,
                limit=limit,
                created_before=before,
                include_offline=term.include_offline,
            )
        case (TargetKind.CLIENT, "grants"):
            # The client's grants in the token stores that have grants (the package's own).
            return walk_grants(db, value, after=after, limit=limit, created_before=before)
        case (TargetKind.CREDENTIAL, "grants"):
            return walk_grants(db, value, after=after, limit=limit, below_version=cutoff.below_version or 0)
        case _:
            raise ValueError(f"no walk {phase} for {term.target_kind}")
    return [(k, sid) for k, sid in db.execute(query.limit(limit))]


def _plan(db: Session, target: Target, include_offline: bool) -> _Plan:
    """What a small termination (sessions, expiry, one grant) ends; the scoped kinds (subject,
    client, credential) only check their target exists here and walk it in run_chunk."""
    plan = _Plan()
    match target:
        case Sessions(sids=sids):
            if not sids:
                raise InvalidRequest("at least one sid is required")
            rows = db.execute(select(OPSession.sid, OPSession.ended_at).where(OPSession.sid.in_(sids))).all()
            if not rows:
                raise NotFound("no OP session with that sid")
            plan.sessions = [sid for sid, ended_at in rows if ended_at is None]
        case Expiry(sids=sids):
            plan.sessions = list(sids)
        case ClientKill(client_id=client_id) | Credential(client_id=client_id):
            # The kill switch: every grant of the client, offline ones and client_credentials
            # included, and its participation in every live session (run_chunk's walks).
            if db.get(Client, client_id) is None:
                raise NotFound("no client with that client_id")
        case GrantTarget(grant_id=grant_id):
            if not grant_exists(db, grant_id):
                raise NotFound("no grant with that id")
            plan.grants = [grant_id]
    return plan


def _termination_of(db: Session, sids: Sequence[str]) -> Termination | None:
    """The termination that ended the first already-ended session among ``sids``."""
    term_id = db.scalar(
        select(OPSession.termination_id)
        .where(OPSession.sid.in_(list(sids)), OPSession.termination_id.is_not(None))
        .limit(1)
    )
    return db.get(Termination, term_id) if term_id else None


def _grant_termination(db: Session, grant_id: str, other_than: str) -> Termination | None:
    """The latest termination by ``grant_id`` besides ``other_than``."""
    return db.scalar(
        select(Termination)
        .where(
            Termination.target_kind == TargetKind.GRANT,
            Termination.target_value == grant_id[:255],
            Termination.id != other_than,
        )
        .order_by(Termination.created_at.desc())
        .limit(1)
    )


def _live_participations(db: Session, client_id: str, sids: set[str] | None = None) -> list[tuple[str, str]]:
    """(sid, client_id) of the client's not-yet-ended participation in live sessions."""
    query = (
        select(SessionParticipant.sid, SessionParticipant.client_id)
        .join(OPSession, OPSession.sid == SessionParticipant.sid)
        .where(
            SessionParticipant.client_id == client_id,
            SessionParticipant.ended_at.is_(None),
            OPSession.ended_at.is_(None),
        )
    )
    if sids is not None:
        query = query.where(SessionParticipant.sid.in_(sorted(sids)))
    return [(sid, cid) for sid, cid in db.execute(query)]


def _write_outbox(
    db: Session,
    term: Termination,
    notify: list[tuple[str, str]],
    now: dt.datetime,
    browser_present: bool,
    subjects: dict[str, str],
) -> int:
    """One outbox row per (told pair, channel); returns the rows written. ``subjects``: the
    sessions' subjects known already (those this termination ended); the others are read."""
    if not notify:
        return 0
    client_ids = sorted({c for _, c in notify})
    # Extension mode: the logout URIs the host's client table holds now (an RP that moved its
    # backchannel_logout_uri, a deleted client), not those copied at its last authorization.
    refresh_shadow_clients(db, client_ids)
    # The two URIs only, not whole Client entities (50 RPs: 3 ms of CPU per logout went to
    # building them, their JSON columns parsed).
    clients = {
        c.client_id: c
        for c in db.execute(
            select(Client.client_id, Client.backchannel_logout_uri, Client.frontchannel_logout_uri).where(
                Client.client_id.in_(client_ids)
            )
        )
    }
    subjects = dict(subjects)
    for chunk in _chunks(sorted({s for s, _ in notify} - subjects.keys()), 500):
        subjects.update(
            dict(db.execute(select(OPSession.sid, OPSession.subject).where(OPSession.sid.in_(chunk))).all())
        )
    rows: list[dict[str, object]] = []
    for sid, client_id in notify:
        client = clients.get(client_id)
        if client is None:
            continue
        base = dict(
            termination_id=term.id,
            client_id=client_id,
            sid=sid,
            subject=subjects.get(sid),
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
        if client.backchannel_logout_uri:
            rows.append(
                dict(
                    base,
                    channel=Channel.BACKCHANNEL,
                    target_uri=client.backchannel_logout_uri,
                    state=DeliveryState.PENDING,
                )
            )
        if client.frontchannel_logout_uri:
            rows.append(
                dict(
                    base,
                    channel=Channel.FRONTCHANNEL,
                    target_uri=client.frontchannel_logout_uri,
                    state=DeliveryState.PENDING if browser_present else DeliveryState.UNCONFIRMED,
                    last_error=None if browser_present else "no user agent took part in this termination",
                    completed_at=None if browser_present else now,
                )
            )
    for chunk in _chunks(rows, 1000):
        db.execute(insert(Delivery), chunk)
    if any(r["channel"] == Channel.BACKCHANNEL for r in rows):
        announce(db)  # wakes every worker when (and only if) this transaction commits
    return len(rows)


def _chunks(items: Sequence | Iterable, n: int):  # type: ignore[no-untyped-def,type-arg]
    items = list(items)
    for i in range(0, len(items), n):
        yield items[i : i + n]


__all__ = [
    "COMPLETE",
    "INLINE_LIMIT",
    "PHASES",
    "RUNNING",
    "ClientKill",
    "Credential",
    "Expiry",
    "GrantTarget",
    "Sessions",
    "Subject",
    "Target",
    "by_client",
    "by_credential",
    "by_expiry",
    "by_grant",
    "by_sessions",
    "by_sid",
    "by_subject",
    "run_chunk",
    "terminate",
]
