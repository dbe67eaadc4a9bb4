"""Extension mode, framework-free: a host IdP's own Authlib token and client models.

A host that adopts oidc-logout keeps its ``AuthorizationServer`` and its models on Authlib's
SQLAlchemy mixins (``OAuth2TokenMixin``, ``OAuth2ClientMixin``). What the extension needs of
them lives here:

* the side table ``oidc_logout_token_session`` (:class:`~oidc_logout.storage.models.HostTokenSession`)
  binds a host authorization code and then the host token rows issued for it to the OP session
  (``sid``) they belong to; the host's tables do not change;
* :class:`HostTokenStore` revokes the host's tokens (the mixin's ``access_token_revoked_at`` /
  ``refresh_token_revoked_at``) inside the termination's transaction: by session through the
  side table, by subject and client through the host's ``user_id`` / ``client_id`` columns (so
  tokens issued before adoption, which no side-table row names, are revoked too), and by grant
  (``host-token:<table>:<primary key>``, see :meth:`HostTokenStore.revoke_grants`): what RFC 7009
  refresh-token revocation and the admin API's ``grant_id`` terminate;
* :func:`~oidc_logout.host_models.sync_host_client` keeps a row in the extension's client table for every host client
  that takes part in an OP session: deliveries, participations and the outbox point at it, and
  it carries the logout metadata the host stored in the client's ``client_metadata``.

A termination revokes tokens only through :mod:`oidc_logout.token_stores`: the extension
registers a :class:`HostTokenStore` for the host's database engine, next to the package's own
store, so every path that terminates (RP-initiated logout, admin API, expiry sweep, the host's
own code) revokes the host's tokens in the same transaction as the extension's own rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .storage.base import utcnow
from .storage.models import Client, HostTokenSession, OPSession
from .storage.queries import rowcount
from .token_stores import TokenStore, register_token_store
from .tokens import token_hash

__all__ = [
    "CODE",
    "GRANT_PREFIX",
    "OFFLINE_ACCESS",
    "TOKEN",
    "HostTokenStore",
    "Presented",
    "TokenStore",
    "as_column_type",
    "bind_code",
    "bind_token",
    "find_presented",
    "host_grant_id",
    "live_session",
    "not_revoked",
    "register_token_store",
    "revoke_access_token",
    "row_pk",
    "row_revoked",
    "session_of_code",
    "session_of_token",
    "shadow_client_upsert",
    "shadow_values",
]

#: ``HostTokenSession.kind`` values.
CODE = "code"
TOKEN = "token"
#: Core 1.0 §11: a refresh token issued with this scope outlives the session.
OFFLINE_ACCESS = "offline_access"
#: A host grant's id: ``host-token:<table>:<primary key>`` (the table keeps two stores apart).
GRANT_PREFIX = "host-token:"


class HostTokenStore:
    """:class:`~oidc_logout.token_stores.GrantStore` over a host token model built on Authlib's
    ``OAuth2TokenMixin`` (one row holds an access token and, optionally, its refresh token).
    The mixin has no column for a reason: the termination record keeps it.

    **What "a grant" of the host covers.** The mixin keeps one grant's refresh token and the
    access token issued with it in one row, and a refresh (Authlib's ``RefreshTokenGrant``)
    stores a new row and calls the host's ``revoke_old_credential`` on the old one; the host's
    table does not record which rows descend from one authorization code. The grant
    ``host-token:<table>:<pk>`` is therefore:

    1. the row ``pk``: its refresh and its access token;
    2. when the row is bound to an OP session (the side table, written when the host issued it
       in a live session): the access tokens of the other rows of the *same client in the same
       OP session* whose refresh token is not live (retired by rotation, revoked, or never
       issued) -- the earlier links of the rotation chain, whose access tokens a host's
       ``revoke_old_credential`` may have left alive, and access tokens refreshed without
       rotation. A row of that client and session with a live refresh token of its own is
       another grant (a second code flow, another tab) and is left alone.

    A row bound to no session (issued before adoption, outside any OP session, or refreshed
    offline after its session ended) is its grant alone; Authlib's rotation retires its
    predecessors.

    :param token_model: the host's mapped token class.
    :param user_id_attribute: the column naming the End-User (Authlib's guide: ``user_id``);
        the OP session's subject is converted to its Python type (``"42"`` -> ``42``).
    """

    def __init__(self, token_model: Any, *, user_id_attribute: str = "user_id") -> None:
        self.model = token_model
        self._pk = token_model.__mapper__.primary_key[0]
        self._user_id = getattr(token_model, user_id_attribute)

    def __eq__(self, other: object) -> bool:
        # Equal stores revoke the same rows: registering one again replaces it.
        return isinstance(other, HostTokenStore) and (other.model, other._user_id.key) == (
            self.model,
            self._user_id.key,
        )

    def __hash__(self) -> int:
        return hash((HostTokenStore, self.model, self._user_id.key))

    # -- the termination's scopes ------------------------------------------------------------
    def revoke_for_sessions(
        self, db: Session, sids: Sequence[str], *, include_offline: bool, now: dt.datetime, reason: str = ""
    ) -> int:
        """Back-Channel Logout §2.7: tokens issued in an ended session stop working; a refresh
        token with ``offline_access`` survives unless ``include_offline`` (its access token
        does not)."""
        changed = 0
        for chunk in _chunks(list(sids), 500):
            refs = db.scalars(
                select(HostTokenSession.ref).where(
                    HostTokenSession.kind == TOKEN, HostTokenSession.sid.in_(chunk)
                )
            ).all()
            ids = [k for k in (self._key(r) for r in refs) if k is not None]
            for ids_chunk in _chunks(ids, 500):
                changed += self._revoke(db, self._pk.in_(ids_chunk), include_offline, now)
        return changed

    def revoke_for_subject(
        self, db: Session, subject: str, *, include_offline: bool, now: dt.datetime, reason: str = ""
    ) -> int:
        """Every token of the End-User, whether or not issued in a known OP session (tokens
        from before adoption have no side-table row)."""
        user = as_column_type(self._user_id, subject)
        if user is None:
            return 0
        return self._revoke(db, self._user_id == user, include_offline, now)

    def revoke_for_client(self, db: Session, client_id: str, *, now: dt.datetime, reason: str = "") -> int:
        """The kill switch: every token of the client, offline ones included."""
        return self._revoke(db, self.model.client_id == client_id, True, now)

    def has_subject(self, db: Session, subject: str) -> bool:
        """Whether a host token row names the End-User ``subject`` (revoked or not)."""
        user = as_column_type(self._user_id, subject)
        return (
            user is not None and db.scalar(select(self._pk).where(self._user_id == user).limit(1)) is not None
        )

    # -- grants ------------------------------------------------------------------------------------
    def has_grant(self, db: Session, grant_id: str) -> bool:
        pk = self._grant_key(grant_id)
        return pk is not None and db.scalar(select(self._pk).where(self._pk == pk)) is not None

    def revoke_grants(
        self, db: Session, grant_ids: Sequence[str], *, now: dt.datetime, reason: str = ""
    ) -> int:
        """The named rows' refresh and access tokens and, for a session-bound row, the access
        tokens of its rotation chain (the class documentation); offline or not. Returns the
        rows whose access or refresh token this revoked (as :meth:`revoke_for_sessions`): 0
        when every named grant was already revoked, whoever did it (the conditional UPDATEs
        decide)."""
        stamp = int(now.timestamp())
        m = self.model
        revoked = 0
        for pk in (k for k in map(self._grant_key, grant_ids) if k is not None):
            refresh = _set_revoked(db, m, m.refresh_token_revoked_at, stamp, self._pk == pk, *_has_refresh(m))
            access = _set_revoked(db, m, m.access_token_revoked_at, stamp, self._pk == pk)
            if not (refresh or access):
                continue  # §2.2 (RFC 7009): already revoked; its chain went with it
            revoked += 1
            chain = self._chain(db, pk)
            if chain:
                # RFC 7009 §2.1: "the authorization server SHOULD also invalidate all access
                # tokens based on the same authorization grant": the chain's, not another grant's
                # (a row with a live refresh token of its own).
                revoked += _set_revoked(
                    db,
                    m,
                    m.access_token_revoked_at,
                    stamp,
                    self._pk.in_(chain),
                    or_(*_no_refresh(m), ~not_revoked(m.refresh_token_revoked_at)),
                )
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
        """None: a client kill switch revokes the host's rows by ``client_id`` in its cut-off's
        transaction (:meth:`revoke_for_client`), and secret rotation is the host's own (the
        admin API refuses it in extension mode), so no chunk has host grants left to walk."""
        return []

    # -- helpers -------------------------------------------------------------------------------
    def _key(self, ref: str) -> Any:
        return as_column_type(self._pk, ref)

    def _grant_key(self, grant_id: str) -> Any:
        """The primary key a grant id of this store names, or None (another store's id)."""
        prefix = host_grant_id(self.model, "")
        return self._key(grant_id[len(prefix) :]) if grant_id.startswith(prefix) else None

    def _chain(self, db: Session, pk: Any) -> list[Any]:
        """The other host rows of the same client in the same OP session (the side table), or
        none when the row is bound to no session."""
        bound = db.execute(
            select(HostTokenSession.sid, HostTokenSession.client_id).where(
                HostTokenSession.kind == TOKEN, HostTokenSession.ref == str(pk)
            )
        ).first()
        if bound is None:
            return []
        refs = db.scalars(
            select(HostTokenSession.ref).where(
                HostTokenSession.kind == TOKEN,
                HostTokenSession.sid == bound.sid,
                HostTokenSession.client_id == bound.client_id,
                HostTokenSession.ref != str(pk),
            )
        ).all()
        return [k for k in map(self._key, refs) if k is not None]

    def _revoke(self, db: Session, where: Any, include_offline: bool, now: dt.datetime) -> int:
        """Access tokens always; refresh tokens unless offline and not ``include_offline``.
        Conditional UPDATEs (only not-yet-revoked values): a second termination changes
        nothing. Returns the rows whose access or refresh token this revoked."""
        m = self.model
        stamp = int(now.timestamp())
        touched: set[Any] = set()
        live_access = not_revoked(m.access_token_revoked_at)
        live_refresh = not_revoked(m.refresh_token_revoked_at)
        ids = db.scalars(select(self._pk).where(where, live_access)).all()
        if ids:
            _set_revoked(db, m, m.access_token_revoked_at, stamp, self._pk.in_(ids))
            touched.update(ids)
        refresh_cond = [where, live_refresh, *_has_refresh(m)]
        if not include_offline:
            refresh_cond.append(or_(m.scope.is_(None), ~m.scope.contains(OFFLINE_ACCESS)))
        rids = db.scalars(select(self._pk).where(*refresh_cond)).all()
        if rids:
            _set_revoked(db, m, m.refresh_token_revoked_at, stamp, self._pk.in_(rids))
            touched.update(rids)
        return len(touched)


@dataclass(frozen=True)
class Presented:
    """A host token row and which of its two values a request presented (RFC 7009 / RFC 7662
    ``token``)."""

    row: Any
    refresh: bool


def find_presented(db: Session, token_model: Any, value: str, hint: str | None) -> Presented | None:
    """The host row holding ``value`` as its access or refresh token, the hinted column first
    (RFC 7009 §2.1 / RFC 7662 §2.1: a hint that misses extends the search to the other)."""
    order = (True, False) if hint == "refresh_token" else (False, True)
    for refresh in order:
        column = token_model.refresh_token if refresh else token_model.access_token
        row = db.scalar(select(token_model).where(column == value))
        if row is not None:
            return Presented(row, refresh)
    return None


def row_pk(row: Any) -> Any:
    """The primary key of a mapped host row (what the side table and grant ids name)."""
    return row.__mapper__.primary_key_from_instance(row)[0]


def row_revoked(row: Any) -> bool:
    """Whether the host's own resource protection refuses the row's access token as revoked:
    Authlib's bearer validator asks the row's ``is_revoked()`` (a host may override the
    mixin's), else the mixin's rule, either revocation column set."""
    is_revoked = getattr(row, "is_revoked", None)
    if callable(is_revoked):
        return bool(is_revoked())
    return bool(row.access_token_revoked_at or row.refresh_token_revoked_at)


def row_expired(row: Any) -> bool:
    """Whether the host's own resource protection refuses the row's access token as expired:
    Authlib's bearer validator asks the row's ``is_expired()`` (a host may override the
    mixin's), else the mixin's rule: no ``expires_in`` (0 or None) never expires, otherwise
    expired once ``issued_at + expires_in`` is past."""
    is_expired = getattr(row, "is_expired", None)
    if callable(is_expired):
        return bool(is_expired())
    if not row.expires_in:
        return False
    return bool(row.issued_at + row.expires_in < utcnow().timestamp())


def host_grant_id(token_model: Any, pk: Any) -> str:
    """The grant id of the host token row ``pk`` (:class:`HostTokenStore`'s grants)."""
    return f"{GRANT_PREFIX}{token_model.__table__.name}:{pk}"


def revoke_access_token(db: Session, token_model: Any, pk: Any, now: dt.datetime) -> bool:
    """Revoke the access token of the host row ``pk`` alone (RFC 7009 §2.1: revoking an access
    token MAY revoke its refresh token; it is left alone); False when it was already revoked."""
    pk_column = token_model.__mapper__.primary_key[0]
    stamp = int(now.timestamp())
    return bool(_set_revoked(db, token_model, token_model.access_token_revoked_at, stamp, pk_column == pk))


def _set_revoked(db: Session, model: Any, column: Any, stamp: int, *where: Any) -> int:
    """Stamp ``column`` (one of the mixin's ``*_revoked_at``) on the rows ``where`` selects
    whose value is not revoked yet; returns how many. Conditional, so of two concurrent
    revocations of one value exactly one counts it."""
    return rowcount(
        db.execute(
            update(model)
            .where(*where, not_revoked(column))
            .values({column.key: stamp})
            .execution_options(synchronize_session=False)
        )
    )


def _has_refresh(model: Any) -> tuple[Any, Any]:
    return model.refresh_token.is_not(None), model.refresh_token != ""


def _no_refresh(model: Any) -> tuple[Any, Any]:
    return model.refresh_token.is_(None), model.refresh_token == ""


def not_revoked(column: Any) -> Any:
    """Not revoked: the mixin's columns default to 0 ("not revoked"); NULL means the same."""
    return (column.is_(None)) | (column == 0)


def as_column_type(column: Any, value: str) -> Any:
    """``value`` as the column's Python type (None when it cannot be one)."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    try:
        return python_type(value)
    except (TypeError, ValueError):
        return None


# -- the side table ----------------------------------------------------------------------------
def bind_code(db: Session, code: str, sid: str, client_id: str) -> None:
    """Remember which OP session a host authorization code was issued in (stored hashed)."""
    db.add(HostTokenSession(kind=CODE, ref=token_hash(code), sid=sid, client_id=client_id))


def session_of_code(db: Session, code: str) -> str | None:
    return db.scalar(
        select(HostTokenSession.sid).where(
            HostTokenSession.kind == CODE, HostTokenSession.ref == token_hash(code)
        )
    )


def bind_token(db: Session, token_id: Any, sid: str, client_id: str) -> None:
    """Bind a host token row (by primary key) to the OP session it was issued in."""
    db.add(HostTokenSession(kind=TOKEN, ref=str(token_id), sid=sid, client_id=client_id))


def session_of_token(db: Session, token_id: Any) -> str | None:
    return db.scalar(
        select(HostTokenSession.sid).where(
            HostTokenSession.kind == TOKEN, HostTokenSession.ref == str(token_id)
        )
    )


def live_session(db: Session, sid: str | None) -> OPSession | None:
    if not sid:
        return None
    row = db.get(OPSession, sid)
    return row if row is not None and row.ended_at is None else None


# -- the shadow client row -----------------------------------------------------------------------
#: Host client metadata copied into the shadow row (Back-/Front-Channel Logout §2, RP-Initiated §3).
_COPIED = (
    "backchannel_logout_uri",
    "backchannel_logout_session_required",
    "frontchannel_logout_uri",
    "frontchannel_logout_session_required",
    "post_logout_redirect_uris",
    "redirect_uris",
    "client_name",
)


def shadow_values(metadata: dict[str, Any]) -> dict[str, Any]:
    """The shadow row's copy of the host's logout metadata (the columns an upsert refreshes)."""
    return {
        "backchannel_logout_uri": metadata.get("backchannel_logout_uri") or None,
        "backchannel_logout_session_required": bool(metadata.get("backchannel_logout_session_required")),
        "frontchannel_logout_uri": metadata.get("frontchannel_logout_uri") or None,
        "frontchannel_logout_session_required": bool(metadata.get("frontchannel_logout_session_required")),
        "post_logout_redirect_uris": list(metadata.get("post_logout_redirect_uris") or []),
        "redirect_uris": list(metadata.get("redirect_uris") or []),
        "client_name": (str(metadata.get("client_name") or "")[:255] or None),
    }


def shadow_client_upsert(dialect: str, client_id: str, metadata: dict[str, Any]) -> Any:
    """The race-free INSERT ... ON CONFLICT DO UPDATE of the shadow row of a host client (no
    secret: the host's server authenticates it; the row exists for the foreign keys of
    participations and deliveries and for the logout URIs delivery reads), for a Session or a
    Connection (:func:`oidc_logout.host_models.sync_host_client` runs it, also inside the
    host's flush)."""
    values = shadow_values(metadata)
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(Client)
        .values(
            client_id=client_id,
            client_secret_hash=None,
            token_endpoint_auth_method=str(
                metadata.get("token_endpoint_auth_method") or "client_secret_basic"
            )[:40],
            grant_types=list(metadata.get("grant_types") or []),
            response_types=list(metadata.get("response_types") or []),
            scope=str(metadata.get("scope") or ""),
            extra_metadata={},
            created_at=utcnow(),
            **values,
        )
        .on_conflict_do_update(index_elements=["client_id"], set_=values)
    )


def _chunks(items: Iterable[Any], n: int) -> Iterable[list[Any]]:
    items = list(items)
    for i in range(0, len(items), n):
        yield items[i : i + n]
