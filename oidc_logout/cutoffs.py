"""Pruning of cut-offs that nothing depends on any more (issue 17).

A termination by subject, client or credential writes one :class:`~.storage.models.Cutoff`
("what this scope was issued at or before ``before`` is dead") so that its whole scope is
refused the moment it commits; its chunks (:mod:`oidc_logout.chunks`) then mark every row
individually: sessions ended, grants and tokens revoked. Once they have, most cut-offs refuse
nothing that is not already refused without them, and the table would otherwise only grow.

A cut-off is deleted only when all of these hold (checked by :func:`still_needed`, in the
deleting transaction):

1. its termination is ``complete`` (no chunk will read it again) and completed at least
   ``termination_cutoff_retention`` seconds ago. The retention is the margin for a row that
   the cut-off covers but that a transaction open across the termination committed after the
   chunks walked past it (e.g. a login that started before the cut-off); a day by default;
2. nothing it refuses could still be presented valid without it. Exactly what each kind
   refuses (:mod:`oidc_logout.storage.queries`, the one liveness predicate):

   * **subject**: every session of the subject created at or before the cut-off
     (``session_is_cut_off``), hence the tokens, codes and browser cookies bound to them. Needed
     while such a session is not ended. With ``include_offline`` also every grant bound to a
     session the termination ended (``grant_is_cut_off``): needed while a token of such a grant
     is neither revoked (itself or its grant) nor expired. This includes offline grants of a
     session that a *plain* logout ended after the cut-off committed but before the chunk
     reached it: that logout did not revoke them (Back-Channel Logout §2.7), the sessions'
     chunk did not either (it revokes what it ends itself), and until the termination's grant
     walk revokes them the cut-off alone keeps them dead. Without ``include_offline`` a subject cut-off never covered
     offline refresh tokens (§2.7: they "normally SHOULD NOT be revoked"): pruning it changes
     nothing for them;
   * **client**: grants of the client created at or before it, and its authorization codes
     issued at or before it (``code_is_usable``). Needed while a token of such a grant is
     usable (not revoked, not expired) or such a code is unused and unexpired (codes are not
     marked by the chunks: they expire within ``authorization_code_lifetime``);
   * **credential**: grants of the client authenticated with an older secret version. Needed
     while a token of such a grant is usable.

   Extension mode: the host's own tokens are revoked by ``UPDATE`` in the termination's own
   transaction (:func:`oidc_logout.host.revoke_host_tokens`), never by the cut-off, so they
   do not depend on it.

Who prunes: every delivery loop (embedded dispatcher, ``oidc-logout worker``), every
:data:`PRUNE_INTERVAL` seconds, at most :data:`PRUNE_BATCH` cut-offs per run, each run one
short transaction. Concurrent runners do not double the work (PostgreSQL: ``FOR UPDATE SKIP
LOCKED`` on the candidates) and a repeated delete is harmless. A cut-off still needed is
examined again on a later run (the runner keeps a cursor, so a few cut-offs needed for long
never starve the others).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from .config import Settings
from .storage.base import utcnow
from .storage.models import AuthorizationCode, Cutoff, Grant, OPSession, Termination, Token
from .termination import COMPLETE
from .vocabulary import TargetKind

log = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]

#: Seconds between two pruning runs of one delivery loop.
PRUNE_INTERVAL = 60.0
#: Cut-offs examined per run (one transaction; a few indexed EXISTS queries each).
PRUNE_BATCH = 100


@dataclass(frozen=True)
class PruneResult:
    """What one run did: cut-offs examined and deleted, and the cursor of the next run (the
    last id examined; 0 once the end was reached, so the next run starts over)."""

    examined: int
    pruned: int
    next_after: int


def _usable_token(now: dt.datetime, *grant_conds: ColumnElement[bool]) -> ColumnElement[bool]:
    """EXISTS a token that still works on its own (not revoked, grant not revoked, not
    expired) of a grant matching ``grant_conds``."""
    return exists(
        select(Token.id)
        .join(Grant, Grant.id == Token.grant_id)
        .where(
            *grant_conds,
            Grant.revoked_at.is_(None),
            Token.revoked_at.is_(None),
            or_(Token.expires_at.is_(None), Token.expires_at > now),
        )
    )


def still_needed(db: Session, cutoff: Cutoff, now: dt.datetime | None = None) -> str | None:
    """Why ``cutoff`` still refuses something that nothing else refuses (a short reason), or
    None when deleting it changes no answer at any endpoint (see the module docstring)."""
    now = now or utcnow()
    value, before = cutoff.value, cutoff.before
    checks: list[tuple[str, ColumnElement[bool]]] = []
    match cutoff.kind:
        case TargetKind.SUBJECT:
            checks.append(
                (
                    "a session it covers is not ended",
                    exists(
                        select(OPSession.sid).where(
                            OPSession.subject == value,
                            OPSession.created_at <= before,
                            OPSession.ended_at.is_(None),
                        )
                    ),
                )
            )
            if cutoff.include_offline:
                # grant_is_cut_off: grants of the subject bound to a session created at or
                # before the cut-off and not ended before it.
                ended_by_it = exists(
                    select(OPSession.sid).where(
                        OPSession.sid == Grant.sid,
                        OPSession.created_at <= before,
                        or_(OPSession.ended_at.is_(None), OPSession.ended_at >= before),
                    )
                )
                checks.append(
                    (
                        "a token of a grant it covers is still usable",
                        _usable_token(now, Grant.subject == value, Grant.sid.is_not(None), ended_by_it),
                    )
                )
        case TargetKind.CLIENT:
            checks.append(
                (
                    "a token of a grant it covers is still usable",
                    _usable_token(now, Grant.client_id == value, Grant.created_at <= before),
                )
            )
            checks.append(
                (
                    "a code it covers is unused and unexpired",
                    exists(
                        select(AuthorizationCode.id).where(
                            AuthorizationCode.client_id == value,
                            AuthorizationCode.created_at <= before,
                            AuthorizationCode.used_at.is_(None),
                            AuthorizationCode.expires_at > now,
                        )
                    ),
                )
            )
        case TargetKind.CREDENTIAL:
            checks.append(
                (
                    "a token of a grant it covers is still usable",
                    _usable_token(
                        now,
                        Grant.client_id == value,
                        Grant.credential_version < (cutoff.below_version or 0),
                    ),
                )
            )
        case _:
            return f"unknown cut-off kind {cutoff.kind!r}"  # never drop what we cannot judge
    for reason, condition in checks:
        if db.scalar(select(condition)):
            return reason
    return None


def prune_cutoffs(
    session_factory: SessionFactory,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    after_id: int = 0,
    limit: int = PRUNE_BATCH,
) -> PruneResult:
    """Delete, in one transaction, the cut-offs among the next ``limit`` candidates (id above
    ``after_id``) that :func:`still_needed` finds unneeded. Candidates: cut-offs of complete
    terminations completed at least ``settings.termination_cutoff_retention`` seconds ago."""
    now = now or utcnow()
    done_by = now - dt.timedelta(seconds=max(0, settings.termination_cutoff_retention))
    candidates = (
        select(Cutoff)
        .join(Termination, Termination.id == Cutoff.termination_id)
        .where(
            Cutoff.id > after_id,
            Termination.state == COMPLETE,
            func.coalesce(Termination.completed_at, Termination.created_at) <= done_by,
        )
        .order_by(Cutoff.id)
        .limit(max(1, limit))
    )
    with session_factory() as db, db.begin():
        if db.get_bind().dialect.name == "postgresql":
            # Another runner's candidates are skipped, not waited for (and not examined twice).
            candidates = candidates.with_for_update(of=Cutoff, skip_locked=True)
        rows = list(db.scalars(candidates))
        prunable = [c.id for c in rows if still_needed(db, c, now) is None]
        if prunable:
            db.execute(delete(Cutoff).where(Cutoff.id.in_(prunable)))
    if prunable:
        log.info("pruned %d cut-offs no longer needed", len(prunable))
    next_after = rows[-1].id if len(rows) >= max(1, limit) else 0
    return PruneResult(examined=len(rows), pruned=len(prunable), next_after=next_after)


__all__ = ["PRUNE_BATCH", "PRUNE_INTERVAL", "PruneResult", "prune_cutoffs", "still_needed"]
