"""The package's own grant and token tables as a token store.

Turnkey mode issues tokens from the package's own small Authlib server
(:class:`~oidc_logout.flask.server.OPServer`): one :class:`~oidc_logout.storage.models.Grant`
row per authorization (its refresh token lives and dies with it) and one hashed
:class:`~oidc_logout.storage.models.Token` row per access or refresh token. A termination
revokes them through :class:`OwnTokenStore`, the same
:class:`~oidc_logout.token_stores.TokenStore` interface it revokes a host's tokens through
(:class:`~oidc_logout.host.HostTokenStore`); :mod:`oidc_logout.token_stores` decides which
stores a termination's engine has.

Storage only: which rows a scope names and conditional UPDATEs that mark them revoked. What a
termination ends, and when (cut-off at commit, chunks after it), is
:mod:`oidc_logout.termination`'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from ..vocabulary import TokenKind
from .models import Grant, Token
from .queries import rowcount

__all__ = ["OwnTokenStore"]

#: Rows per ``IN (...)`` list (keeps every statement's parameter count bounded).
_BATCH = 500


class OwnTokenStore:
    """:class:`~oidc_logout.token_stores.GrantStore` over the package's own ``Grant`` and
    ``Token`` tables. Stateless: every instance is equal (one per engine is ever used).

    Every method runs in the caller's transaction, never commits, and UPDATEs conditionally
    (``revoked_at IS NULL``): a grant or token already revoked (by an earlier termination, a
    replayed chunk or RFC 7009) is neither revoked nor counted again."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnTokenStore)

    def __hash__(self) -> int:
        return hash(OwnTokenStore)

    def __repr__(self) -> str:
        return "OwnTokenStore()"

    # -- the termination's scopes --------------------------------------------------------------
    def revoke_for_sessions(
        self, db: Session, sids: Sequence[str], *, include_offline: bool, now: dt.datetime, reason: str
    ) -> int:
        """Grants issued in the ended sessions ``sids`` (with their refresh and access tokens)
        and every access token bound to those sessions; returns the tokens revoked."""
        revoked = 0
        for chunk in _batches(sids):
            # Back-Channel Logout §2.7: "Refresh tokens issued without the offline_access
            # property to a session being logged out SHOULD be revoked. Refresh tokens issued
            # with the offline_access property normally SHOULD NOT be revoked."
            cond: ColumnElement[bool] = Grant.sid.in_(chunk)
            if not include_offline:
                cond = and_(cond, Grant.offline.is_(False))
            grant_ids = self._revoke_grant_rows(db, cond, now, reason)
            # Access tokens bound to an ended session stop working at once, offline grants
            # included: their client can mint new, session-less ones with its refresh token.
            # One UPDATE with the revoked grants' tokens when they fit one batch (a logout's
            # usual size: a round trip less); a token both selects is counted once.
            bound = and_(Token.sid.in_(chunk), Token.kind == TokenKind.ACCESS_TOKEN)
            if len(grant_ids) <= _BATCH:
                where = or_(Token.grant_id.in_(grant_ids), bound) if grant_ids else bound
                revoked += self._revoke_tokens_where(db, where, now, reason)
            else:
                for ids in _batches(grant_ids):
                    revoked += self._revoke_tokens_where(db, Token.grant_id.in_(ids), now, reason)
                revoked += self._revoke_tokens_where(db, bound, now, reason)
        return revoked

    def revoke_for_subject(
        self, db: Session, subject: str, *, include_offline: bool, now: dt.datetime, reason: str
    ) -> int:
        """Nothing to mark in the cut-off's transaction: every token check of the package's own
        server reads the :class:`~oidc_logout.storage.models.Cutoff` that transaction writes,
        so the subject's tokens are refused from its commit; the termination's chunk walks
        (its sessions, then :meth:`walk_subject_grants`) mark the rows, a bounded number per
        transaction."""
        return 0

    def revoke_for_client(self, db: Session, client_id: str, *, now: dt.datetime, reason: str) -> int:
        """Nothing in the cut-off's transaction (see :meth:`revoke_for_subject`): the chunk
        walk over the client's grants (:meth:`walk_grants`) marks them."""
        return 0

    # -- grants ----------------------------------------------------------------------------------
    def has_grant(self, db: Session, grant_id: str) -> bool:
        return db.get(Grant, grant_id) is not None

    def revoke_grants(self, db: Session, grant_ids: Sequence[str], *, now: dt.datetime, reason: str) -> int:
        """The named grants (offline ones included) and every token they produced."""
        revoked = 0
        for chunk in _batches(grant_ids):
            revoked += self._revoke_grants_where(db, Grant.id.in_(chunk), now, reason)
        return revoked

    def walk_grants(
        self,
        db: Session,
        client_id: str,
        *,
        after: str,
        limit: int,
        created_before: dt.datetime | None = None,
        below_version: int | None = None,
    ) -> list[tuple[str, str | None]]:
        """One keyset page (``Grant.id > after``, in id order, at most ``limit``) of the client's
        live grants, each with its sid: those created at or before ``created_before`` (a client
        kill switch's cut-off) or obtained with a secret older than ``below_version`` (a secret
        rotation). Served by the (client_id, id) index, so a page costs the same however many
        pages came before."""
        where = [Grant.client_id == client_id]
        if created_before is not None:
            where.append(Grant.created_at <= created_before)
        if below_version is not None:
            where.append(Grant.credential_version < below_version)
        return _live_grant_page(db, where, after=after, limit=limit)

    def walk_subject_grants(
        self,
        db: Session,
        subject: str,
        *,
        after: str,
        limit: int,
        created_before: dt.datetime,
        include_offline: bool,
    ) -> list[tuple[str, str | None]]:
        """One keyset page (``Grant.id > after``, in id order, at most ``limit``) of the
        subject's live grants created at or before ``created_before`` - what the subject's
        cut-off refuses: offline ones only with ``include_offline``. Served by the
        (subject, id) index."""
        where = [Grant.subject == subject, Grant.created_at <= created_before]
        if not include_offline:
            where.append(Grant.offline.is_(False))
        return _live_grant_page(db, where, after=after, limit=limit)

    def has_subject(self, db: Session, subject: str) -> bool:
        """Whether a grant of ``subject`` exists (revoked or not)."""
        return db.scalar(select(Grant.id).where(Grant.subject == subject).limit(1)) is not None

    # -- helpers ---------------------------------------------------------------------------------
    @classmethod
    def _revoke_grants_where(
        cls, db: Session, where: ColumnElement[bool], now: dt.datetime, reason: str
    ) -> int:
        """Revoke the live grants ``where`` selects and their live tokens; returns the tokens."""
        revoked = 0
        for chunk in _batches(cls._revoke_grant_rows(db, where, now, reason)):
            revoked += cls._revoke_tokens_where(db, Token.grant_id.in_(chunk), now, reason)
        return revoked

    @staticmethod
    def _revoke_grant_rows(
        db: Session, where: ColumnElement[bool], now: dt.datetime, reason: str
    ) -> list[str]:
        """Mark the live grants ``where`` selects revoked; returns the ids this call revoked
        (conditional on ``revoked_at IS NULL``: a concurrent revocation of a grant counts
        once). One ``UPDATE ... RETURNING`` where the database has it."""
        values = dict(revoked_at=now, revoked_reason=reason[:2048])
        live = and_(where, Grant.revoked_at.is_(None))
        if db.get_bind().dialect.update_returning:
            return list(db.scalars(update(Grant).where(live).values(**values).returning(Grant.id)))
        ids = list(db.scalars(select(Grant.id).where(live)))
        for chunk in _batches(ids):
            db.execute(update(Grant).where(Grant.id.in_(chunk), Grant.revoked_at.is_(None)).values(**values))
        return ids

    @staticmethod
    def _revoke_tokens_where(db: Session, where: ColumnElement[bool], now: dt.datetime, reason: str) -> int:
        """Mark the live tokens ``where`` selects revoked; returns how many."""
        return rowcount(
            db.execute(
                update(Token)
                .where(where, Token.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason[:2048])
            )
        )


def _batches(items: Iterable[Any]) -> Iterator[list[Any]]:
    items = list(items)
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]


def _live_grant_page(
    db: Session, where: list[ColumnElement[bool]], *, after: str, limit: int
) -> list[tuple[str, str | None]]:
    """One keyset page of not-revoked grants matching ``where``: (id, sid) with ``Grant.id >
    after``, in id order, at most ``limit`` (the walks of chunked terminations)."""
    query = select(Grant.id, Grant.sid).where(*where, Grant.id > after, Grant.revoked_at.is_(None))
    return [(k, sid) for k, sid in db.execute(query.order_by(Grant.id).limit(limit))]
