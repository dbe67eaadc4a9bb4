"""Extension mode: RFC 7009 token revocation registered on the host's own Authlib
``AuthorizationServer``, over the host's token model (Authlib's ``OAuth2TokenMixin``).

The host keeps its route (``POST /oauth/revoke`` calling
``server.create_endpoint_response("revocation")``); what answers is
:class:`HostRevocationEndpoint`, with the package's RFC 7009 behaviour
(:mod:`oidc_logout.rfc7009.endpoint`, the turnkey endpoint):

* §2.1 the client authenticates as at the token endpoint (a public client sends its
  ``client_id``; a confidential one may use either secret method), and a token issued to
  another client is refused with ``invalid_grant`` and left alone (the turnkey answer; the
  token stays active in introspection and at the host's resource protection);
* §2.2 an unknown or already revoked token answers 200 and changes nothing;
* §2.2.1 an ID token the host signed answers ``unsupported_token_type`` (HTTP 400);
* revoking an access token sets the row's ``access_token_revoked_at`` only: the refresh token
  of the row keeps working (§2.1 allows revoking it, the turnkey does not);
* revoking a refresh token revokes its grant (§2.1 SHOULD) and records the revocation as a
  ``grant`` termination (audit row, no session ended, no back-channel notification), as the
  turnkey's ``terminate(by_grant(...))`` does.

**What "the grant" of a host refresh token covers.** The mixin keeps one grant's refresh token
and the access token issued with it in one row, and a refresh (Authlib's
``RefreshTokenGrant``) stores a new row and calls the host's ``revoke_old_credential`` on the
old one; the host's table does not record which rows descend from one authorization code.
The grant is therefore:

1. the presented row: its refresh and its access token;
2. when the row is bound to an OP session (the extension's side table
   ``oidc_logout_token_session``, written when the host issued it in a live session): the
   access tokens of the other rows of the *same client in the same OP session* whose refresh
   token is not live (retired by rotation, revoked, or never issued) -- the earlier links of
   the rotation chain, whose access tokens a host's ``revoke_old_credential`` may have left
   alive, and access tokens refreshed without rotation. A row of that client and session with
   a live refresh token of its own is another grant (a second code flow, another tab) and is
   left alone.

A row bound to no session (issued before adoption, outside any OP session, or refreshed
offline after its session ended) is its grant alone; Authlib's rotation retires its
predecessors. Refresh revocation ends neither the OP session nor the client's participation
in it: the client still hears of the session's end.

Every change is a conditional ``UPDATE`` (only not-yet-revoked values): of two concurrent
revocations of one refresh token, one revokes and records the termination, the other finds
nothing left to revoke and answers 200 as well. The host's bearer validation
(``create_bearer_token_validator``: the mixin's ``is_revoked()``) and
:class:`~oidc_logout.flask.host.HostIntrospectionEndpoint` read the same columns, so a
revocation is seen by both the moment it commits.

**A host that registered its own revocation endpoint.** Authlib keeps a list of endpoints per
name and answers with the first one that does not raise ``ContinueIteration``, i.e. the one
registered first. Leaving the host's ``create_revocation_endpoint`` class in front would
silently keep the old behaviour (one row flipped, no grant, no audit), and putting ours in
front would silently make the host's dead code. So :func:`refuse_other_revocation` refuses both
orders with a ``RuntimeError`` naming the host's endpoint: remove its
``register_endpoint(...)`` (docs/integration.md, section 2).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, UnsupportedTokenTypeError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from jwcrypto import jwk, jws
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .. import metrics
from ..core.client import check_client_credentials_syntax
from ..host import TOKEN, as_column_type, not_revoked
from ..limits import plausible_token
from ..storage.base import utcnow
from ..storage.models import HostTokenSession, Termination
from ..storage.queries import rowcount
from ..tokens import new_id
from ..vocabulary import TargetKind
from .state import state

__all__ = ["REVOKED_REASON", "HostRevocationEndpoint", "refuse_other_revocation"]

#: The audit record's reason (the turnkey's words, rfc7009/endpoint.py).
REVOKED_REASON = "refresh token revoked by its client (RFC 7009)"
#: Authlib's endpoint name: the host's route calls ``create_endpoint_response(ENDPOINT)``.
ENDPOINT = _RevocationEndpoint.ENDPOINT_NAME
#: Set on the OAuth2Request by authenticate_token: the refresh token (not the access token) was presented.
_REFRESH_ATTRIBUTE = "oidc_logout_revoke_refresh"


@dataclass(frozen=True)
class _Presented:
    """A host token row and which of its two values was presented."""

    row: Any
    refresh: bool

    def check_client(self, client: Any) -> bool:
        return bool(self.row.client_id == client.get_client_id())


class HostRevocationEndpoint(_RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009 over the host's token model; see the module documentation for what it
    revokes. Registered by :func:`oidc_logout.flask.host.host_endpoints`; ``self.server`` is the current
    application's :class:`~oidc_logout.flask.host.HostContext` (its ``db`` is the host's
    request session)."""

    # §2.1: "The client also includes its authentication credentials as described in
    # Section 2.3. of [RFC6749]": the token endpoint's methods; a public client sends client_id
    # (Authlib accepts "none" only from a client registered with it).
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")

    def __init__(self, token_model: Any) -> None:
        super().__init__()
        self.token_model = token_model
        self._pk = token_model.__mapper__.primary_key[0]

    # Like HostIntrospectionEndpoint: the context of the application serving the request (one
    # module-level host server may serve several applications); register_endpoint's value is
    # the bare host server and is not kept.
    @property
    def server(self) -> Any:
        return state().server

    @server.setter
    def server(self, value: Any) -> None:
        """The host server the endpoint was registered on: reached through the context."""

    # -- the request -----------------------------------------------------------------------------
    def authenticate_endpoint_client(self, request: Any) -> Any:
        # A malformed Basic header or client_id is invalid_client, not a crash in Authlib's parser.
        check_client_credentials_syntax(request)
        return super().authenticate_endpoint_client(request)

    def check_params(self, request: Any, client: Any) -> None:
        if not isinstance(request.form.get("token"), str) or not request.form["token"]:
            raise InvalidRequestError("the 'token' parameter is required")  # §2.1: REQUIRED
        # §2.1: the hint is only a hint ("If the server is unable to locate the token using the
        # given hint, it MUST extend its search across all of its supported token types"): an
        # unknown value is ignored, as at the turnkey endpoint.

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Presented | None:
        if not plausible_token(token_string):
            return None  # §2.2: an invalid token is answered 200
        m = self.token_model
        db = self.server.db
        order = [True, False] if token_type_hint == "refresh_token" else [False, True]
        for refresh in order:
            column = m.refresh_token if refresh else m.access_token
            row = db.scalar(select(m).where(column == token_string))
            if row is not None:
                return _Presented(row, refresh)
        if token_string.count(".") == 2 and _signed_by(token_string, self.server.id_token_jwks()):
            # §2.2.1 unsupported_token_type: "The authorization server does not support the
            # revocation of the presented token type": an ID token the host signed. The error
            # response is RFC 6749 §5.2's, HTTP 400 (Authlib's class defaults to 401).
            err = UnsupportedTokenTypeError()
            err.description = "ID tokens cannot be revoked; revoke the refresh or access token"
            err.status_code = 400
            raise err
        return None

    def authenticate_token(self, request: Any, client: Any) -> Any:
        """The host's token row (what Authlib's ``token_revoked`` signal then carries, as with
        the host's own endpoint); which of its values was presented rides on the request."""
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        # §2.1: the server "verifies whether the token was issued to the client making the
        # revocation request. If this validation fails, the request is refused and the client
        # is informed of the error": invalid_grant (RFC 6749 §5.2), as at the turnkey endpoint.
        if token is None:
            return None
        if not token.check_client(client):
            raise InvalidGrantError("the token was not issued to this client")
        setattr(request, _REFRESH_ATTRIBUTE, token.refresh)
        return token.row

    # -- the revocation --------------------------------------------------------------------------
    def revoke_token(self, token: Any, request: Any) -> None:
        db: Session = self.server.db
        now = utcnow()
        stamp = int(now.timestamp())
        if getattr(request, _REFRESH_ATTRIBUTE, False):
            revoked = self._revoke_grant(db, token, stamp)
            if revoked:
                _record_grant_revocation(db, self._pk_of(token), token.client_id, revoked, now)
                metrics.revoked("refresh_token", db)
        elif self._revoke_access(db, self._pk == self._pk_of(token), stamp):
            # §2.1: revoking an access token MAY revoke its refresh token; it is left alone.
            metrics.revoked("access_token", db)
        # §2.2: already revoked (here or by a concurrent request): nothing changed, 200 all the same.
        db.commit()

    def _revoke_grant(self, db: Session, row: Any, stamp: int) -> int:
        """Revoke the presented refresh token and its grant's access tokens; returns how many
        rows this changed (0: a concurrent request or an earlier revocation got there first)."""
        m, pk = self.token_model, self._pk_of(row)
        won = rowcount(
            db.execute(
                update(m)
                .where(self._pk == pk, not_revoked(m.refresh_token_revoked_at))
                .values(refresh_token_revoked_at=stamp)
                .execution_options(synchronize_session=False)
            )
        )
        if not won:
            return 0  # §2.2: the token was already revoked
        # §2.1: "the authorization server SHOULD also invalidate all access tokens based on the
        # same authorization grant": the row's own, and (session-bound) the chain's.
        self._revoke_access(db, self._pk == pk, stamp)
        chain = self._chain(db, pk)
        others = (
            self._revoke_access(
                db,
                self._pk.in_(chain),
                stamp,
                # Not another grant: no live refresh token of its own.
                or_(
                    m.refresh_token.is_(None),
                    m.refresh_token == "",
                    ~not_revoked(m.refresh_token_revoked_at),
                ),
            )
            if chain
            else 0
        )
        return 1 + others

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
        return [k for k in (as_column_type(self._pk, r) for r in refs) if k is not None]

    def _revoke_access(self, db: Session, where: Any, stamp: int, *extra: Any) -> int:
        """Revoke the access tokens of the rows ``where`` (and ``extra``) selects that are not
        revoked yet; returns how many."""
        m = self.token_model
        return rowcount(
            db.execute(
                update(m)
                .where(where, not_revoked(m.access_token_revoked_at), *extra)
                .values(access_token_revoked_at=stamp)
                .execution_options(synchronize_session=False)
            )
        )

    def _pk_of(self, row: Any) -> Any:
        return row.__mapper__.primary_key_from_instance(row)[0]


def _signed_by(token: str, jwks: dict[str, Any]) -> bool:
    """Whether ``token`` is a JWS that one of ``jwks``'s keys signed (an ID token of the host)."""
    try:
        obj = jws.JWS()
        obj.deserialize(token)
        obj.verify(jwk.JWKSet.from_json(json.dumps(jwks)))
        return True
    except Exception:
        return False


def _record_grant_revocation(
    db: Session, pk: Any, client_id: str, tokens_revoked: int, now: dt.datetime
) -> None:
    """The audit record of a refresh-token revocation: a ``grant`` termination that ended no
    session and notified nobody, as the turnkey's ``terminate(by_grant(...))`` records it
    (a client revoking its own grant needs no logout token; the OP session and the client's
    participation in it live on). ``target_value`` names the host token row."""
    initiator = f"client:{client_id}"
    db.add(
        Termination(
            id=new_id(12),
            target_kind=TargetKind.GRANT,
            target_value=f"host-token:{pk}"[:255],
            reason=REVOKED_REASON,
            initiator=initiator[:255],
            include_offline=False,
            created_at=now,
            sessions_ended=0,
            tokens_revoked=tokens_revoked,
            deliveries_written=0,
        )
    )
    metrics.termination_committed(db, initiator)


def refuse_other_revocation(server: Any) -> None:
    """Refuse a revocation endpoint of the host's own on ``server``, registered before or after
    the extension registers :class:`HostRevocationEndpoint` under Authlib's name
    ``"revocation"`` (Authlib would answer with whichever came first and never reach the
    other). Idempotent per server."""
    theirs = [e for e in getattr(server, "_endpoints", {}).get(ENDPOINT, []) if not _ours(e)]
    if theirs:
        raise RuntimeError(_conflict(theirs[0]))
    if getattr(server, "_oidc_logout_revocation_guarded", False):
        return
    register = server.register_endpoint

    def register_endpoint(endpoint: Any) -> Any:
        if getattr(endpoint, "ENDPOINT_NAME", None) == ENDPOINT and not _ours(endpoint):
            raise RuntimeError(_conflict(endpoint))
        return register(endpoint)

    server.register_endpoint = register_endpoint
    server._oidc_logout_revocation_guarded = True


def _ours(endpoint: Any) -> bool:
    cls = endpoint if isinstance(endpoint, type) else type(endpoint)
    return issubclass(cls, HostRevocationEndpoint)


def _conflict(endpoint: Any) -> str:
    cls = endpoint if isinstance(endpoint, type) else type(endpoint)
    return (
        f"the host's AuthorizationServer has its own {ENDPOINT!r} endpoint "
        f"({cls.__module__}.{cls.__qualname__}); oidc-logout registers "
        f"{HostRevocationEndpoint.__module__}.HostRevocationEndpoint under that name (RFC 7009 "
        "over the host's token model, revoking the refresh token's grant), and Authlib would only "
        "ever answer with the first of the two. Remove the host's register_endpoint(...) for it; "
        'the host\'s route keeps calling create_endpoint_response("revocation").'
    )
