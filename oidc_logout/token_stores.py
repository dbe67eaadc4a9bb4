"""Token stores: the one way a termination revokes tokens, whoever issued them.

A termination (:func:`oidc_logout.termination.terminate` and the chunks it leaves) never
touches a token table itself. It names a scope (ended sessions, named grants, a subject or a
client at its cut-off) and :func:`revoke_tokens` hands that scope to every
:class:`TokenStore` of the database engine the termination runs on:

* :class:`~oidc_logout.storage.own_tokens.OwnTokenStore` -- the package's own ``Grant`` /
  ``Token`` tables, which the turnkey server issues from. They are part of the extension's
  schema, so every engine the extension's tables live on has this store, with no
  registration: the Flask app, the operator CLI, ``oidc-logout worker`` (which builds no
  :class:`~oidc_logout.provider.Provider`), the expiry sweep, the admin API and a host's own
  scripts all revoke them. In extension mode these tables hold no tokens and it finds nothing.
* stores registered for the engine with :func:`register_token_store` -- extension mode
  registers a :class:`~oidc_logout.host.HostTokenStore` over the host's Authlib token model;
  a host with tokens in more than one table registers one store per table.

Grants with ids (a termination by grant, and the chunked walks of a client kill switch or a
secret rotation) are a capability of some stores (:class:`GrantStore`): the package's own.
"""

from __future__ import annotations

import datetime as dt
import heapq
import weakref
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .storage.own_tokens import OwnTokenStore

__all__ = [
    "GrantStore",
    "SubjectGrantWalk",
    "SubjectIndex",
    "TokenStore",
    "grant_exists",
    "register_token_store",
    "revoke_tokens",
    "subject_has_tokens",
    "token_stores_for",
    "unregister_token_store",
    "walk_grants",
    "walk_subject_grants",
]


class TokenStore(Protocol):
    """**Protocol:** what a termination needs of a token store. Every method runs in the
    caller's transaction (never commits), changes only tokens not revoked yet (so a replayed
    chunk or a second termination changes nothing) and returns how many token rows it revoked.
    ``reason`` is the termination's (a store with a column for it records it)."""

    def revoke_for_sessions(
        self, db: Session, sids: Sequence[str], *, include_offline: bool, now: dt.datetime, reason: str
    ) -> int:
        """Tokens issued in the ended OP sessions ``sids``. Back-Channel Logout §2.7: a refresh
        token with ``offline_access`` survives the logout unless ``include_offline``."""
        ...

    def revoke_for_subject(
        self, db: Session, subject: str, *, include_offline: bool, now: dt.datetime, reason: str
    ) -> int:
        """Every token of the End-User, called once in the transaction that writes the
        subject's cut-off (sessions or not: tokens from before adoption too). A store whose
        token checks read the :class:`~oidc_logout.storage.models.Cutoff` may leave its rows
        to the chunk walks and return 0."""
        ...

    def revoke_for_client(self, db: Session, client_id: str, *, now: dt.datetime, reason: str) -> int:
        """The kill switch: every token of the client, offline ones included, called once in
        the cut-off's transaction (same latitude as :meth:`revoke_for_subject`)."""
        ...


@runtime_checkable
class GrantStore(TokenStore, Protocol):
    """**Protocol:** a :class:`TokenStore` whose tokens hang off grants with ids (a grant's
    refresh and access tokens die with it)."""

    def has_grant(self, db: Session, grant_id: str) -> bool:
        """Whether a grant with this id exists (revoked or not)."""
        ...

    def revoke_grants(self, db: Session, grant_ids: Sequence[str], *, now: dt.datetime, reason: str) -> int:
        """The named grants and every token they produced."""
        ...

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
        """The next ``limit`` (grant id, sid or None) of the client's not-revoked grants with
        an id above ``after``, in id order: created at or before ``created_before``, or obtained
        with a client secret version below ``below_version``."""
        ...


@runtime_checkable
class SubjectIndex(Protocol):
    """**Protocol:** a token store that can tell whether it holds tokens of an End-User (a
    Global Token Revocation answers 404 for a subject known nowhere)."""

    def has_subject(self, db: Session, subject: str) -> bool:
        """Whether any token row (revoked or not) names ``subject``."""
        ...


@runtime_checkable
class SubjectGrantWalk(Protocol):
    """**Protocol:** a token store whose grants a termination by subject walks in chunks after
    its cut-off commits (the grants no ended session reaches: offline grants whose session
    ended earlier, grants issued outside a session). A store that revokes a subject's rows in
    the cut-off's transaction (:meth:`TokenStore.revoke_for_subject`) needs no walk."""

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
        """The next ``limit`` (grant id, sid or None) of the subject's not-revoked grants with
        an id above ``after``, in id order, created at or before ``created_before``; offline
        ones only with ``include_offline`` (Back-Channel Logout §2.7)."""
        ...


#: The package's own tables: a store of every engine (see the module docstring).
_OWN = OwnTokenStore()
#: Stores registered per engine, besides the own store.
_STORES: weakref.WeakKeyDictionary[Engine, tuple[TokenStore, ...]] = weakref.WeakKeyDictionary()


def register_token_store(engine: Engine, store: TokenStore) -> None:
    """Terminations running on ``engine`` revoke ``store``'s tokens too. Registering a store
    equal to one already registered replaces it (an app initialised again over the same
    engine and model keeps one store); registering the own store is a no-op (it is always
    there)."""
    if store == _OWN:
        return
    kept = tuple(s for s in _STORES.get(engine, ()) if s != store)
    _STORES[engine] = (*kept, store)


def unregister_token_store(engine: Engine, store: TokenStore) -> None:
    """Undo :func:`register_token_store` (the own store cannot be removed)."""
    kept = tuple(s for s in _STORES.get(engine, ()) if s != store)
    if kept:
        _STORES[engine] = kept
    else:
        _STORES.pop(engine, None)


def token_stores_for(db: Session) -> tuple[TokenStore, ...]:
    """The stores terminations on ``db``'s engine revoke through: the own store first, then the
    registered ones in registration order."""
    bind = db.get_bind()
    engine = getattr(bind, "engine", bind)
    registered = _STORES.get(engine, ()) if isinstance(engine, Engine) else ()
    return (_OWN, *registered)


def revoke_tokens(
    db: Session,
    *,
    sessions: Sequence[str] = (),
    grants: Sequence[str] = (),
    subject: str | None = None,
    client_id: str | None = None,
    include_offline: bool,
    reason: str,
    now: dt.datetime,
) -> int:
    """Revoke, through every store of ``db``'s engine and in the caller's transaction, the
    tokens of the named ``grants`` (stores with grants), of the ended ``sessions``, and every
    token of ``subject`` or ``client_id`` (the cut-off's transaction). Returns the tokens
    revoked; the one call termination makes."""
    revoked = 0
    for store in token_stores_for(db):
        if grants and isinstance(store, GrantStore):
            revoked += store.revoke_grants(db, grants, now=now, reason=reason)
        if sessions:
            revoked += store.revoke_for_sessions(
                db, sessions, include_offline=include_offline, now=now, reason=reason
            )
        if subject is not None:
            revoked += store.revoke_for_subject(
                db, subject, include_offline=include_offline, now=now, reason=reason
            )
        if client_id is not None:
            revoked += store.revoke_for_client(db, client_id, now=now, reason=reason)
    return revoked


def walk_subject_grants(
    db: Session,
    subject: str,
    *,
    after: str,
    limit: int,
    created_before: dt.datetime,
    include_offline: bool,
) -> list[tuple[str, str | None]]:
    """One keyset page over the subject's grants in every store that walks them (merged in id
    order): what a chunk of a termination by subject revokes after its sessions."""
    pages = [
        s.walk_subject_grants(
            db,
            subject,
            after=after,
            limit=limit,
            created_before=created_before,
            include_offline=include_offline,
        )
        for s in token_stores_for(db)
        if isinstance(s, SubjectGrantWalk)
    ]
    return _merged(pages, limit)


def subject_has_tokens(db: Session, subject: str) -> bool:
    """Whether a store of ``db``'s engine holds a token of ``subject``."""
    return any(s.has_subject(db, subject) for s in token_stores_for(db) if isinstance(s, SubjectIndex))


def grant_exists(db: Session, grant_id: str) -> bool:
    """Whether a store of ``db``'s engine has a grant with this id."""
    return any(s.has_grant(db, grant_id) for s in token_stores_for(db) if isinstance(s, GrantStore))


def walk_grants(
    db: Session,
    client_id: str,
    *,
    after: str,
    limit: int,
    created_before: dt.datetime | None = None,
    below_version: int | None = None,
) -> list[tuple[str, str | None]]:
    """One keyset page over the grants of every store with grants (merged in id order): what
    a chunk of a client kill switch or a secret rotation revokes next."""
    pages = [
        s.walk_grants(
            db,
            client_id,
            after=after,
            limit=limit,
            created_before=created_before,
            below_version=below_version,
        )
        for s in token_stores_for(db)
        if isinstance(s, GrantStore)
    ]
    return _merged(pages, limit)


def _merged(pages: list[list[tuple[str, str | None]]], limit: int) -> list[tuple[str, str | None]]:
    """Keyset pages of several stores as one page: merged in id order, at most ``limit``."""
    if len(pages) == 1:
        return pages[0]
    return list(heapq.merge(*pages, key=lambda row: row[0]))[:limit]
