"""Authlib grants backed by oidc_logout storage.

The grants reach the request's database session and the provider through ``self.server``, a
:class:`~oidc_logout.context.ServerContext` (``server.db``, ``server.provider``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import grants as oidc_grants
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ..context import ServerContext
from ..keys import LoadedKey
from ..protocols import EndUser
from ..ssf.events import user_gone
from ..storage.base import utcnow
from ..storage.models import AuthorizationCode, Grant, OPSession, SessionParticipant, Token
from ..storage.queries import (
    claim_code,
    code_is_usable,
    grant_is_revoked,
    is_lock_contention,
    retire_refresh_token,
    session_is_live,
    token_is_active,
)
from ..termination import by_grant
from ..tokens import new_id, token_hash
from ..vocabulary import TokenKind
from .client import check_client_credentials_syntax
from .consent import unregistered_scopes

log = logging.getLogger(__name__)

#: ``revoked_reason`` of a refresh token retired by rotation (a later use of it is reuse).
ROTATED = "rotated"


#: kid -> (the jwcrypto key it was made from, the joserfc key Authlib signs ID tokens with).
_AUTHLIB_KEYS: dict[str, tuple[Any, Any]] = {}
_AUTHLIB_KEYS_LOCK = threading.Lock()


def signing_key_for_authlib(key: LoadedKey) -> Any:
    """The signing key as the joserfc key object Authlib's ID token encoder takes as is.

    Authlib imports a key given as a dict for every ID token, and importing an RSA private
    key validates it: about 30 ms of CPU per ID token for 2048 bits, against 0.25 ms for the
    signature itself. The key object is made once per signing key (and again only if the
    key ring parsed the key anew)."""
    from joserfc.jwk import import_key  # Authlib's own JOSE library (a dependency of it)

    cached = _AUTHLIB_KEYS.get(key.kid)
    if cached is not None and cached[0] is key.key:
        return cached[1]
    made = import_key(key.key.export(private_key=True, as_dict=True))
    with _AUTHLIB_KEYS_LOCK:
        _AUTHLIB_KEYS[key.kid] = (key.key, made)
        while len(_AUTHLIB_KEYS) > 64:  # retired keys of many rotations
            del _AUTHLIB_KEYS[next(iter(_AUTHLIB_KEYS))]
    return made


class TemporarilyUnavailableError(OAuth2Error):  # type: ignore[misc]
    """The request waited too long for a database lock: 503 ``temporarily_unavailable``
    (RFC 6749 §4.1.2.1's code for an overloaded server) with Retry-After, never a 500.
    Nothing was changed; the client may send the same request again."""

    error = "temporarily_unavailable"
    status_code = 503

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", "1")]


@contextmanager
def lock_contention_is_retryable(db: Any) -> Iterator[None]:
    """Turn "gave up waiting for a lock" (SQLite "database is locked", a PostgreSQL lock
    timeout or deadlock) into :class:`TemporarilyUnavailableError` after a rollback."""
    try:
        yield
    except OperationalError as exc:
        if not is_lock_contention(exc):
            raise
        db.rollback()
        log.warning("token request gave up waiting for a database lock")
        raise TemporarilyUnavailableError("the server is busy; retry the request") from None


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only (RFC 9700 §2.1.1: "plain" must not be used), required for public
    clients, and checked for any client that sent a challenge."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        request = grant.request
        if not request.payload.data.get("code_challenge") and getattr(request.client, "is_public", False):
            raise InvalidRequestError("public clients must send a PKCE 'code_challenge' (S256)")
        super().validate_code_challenge(grant, redirect_uri)


#: Longest nonce accepted (the column holds 2048; Core 1.0 sets no limit, real ones are short).
MAX_NONCE_LENGTH = 512


def check_nonce(request: Any, redirect_uri: str | None = None) -> None:
    """Core 1.0 §3.1.2.1 nonce: a string value; one with control characters (NUL: PostgreSQL
    cannot store it) or longer than the column is an ``invalid_request``, never a 500."""
    nonce = request.payload.data.get("nonce")
    if nonce is not None and (
        not isinstance(nonce, str) or len(nonce) > MAX_NONCE_LENGTH or not nonce.isprintable()
    ):
        raise InvalidRequestError(
            f"'nonce' must be at most {MAX_NONCE_LENGTH} printable characters", redirect_uri=redirect_uri
        )


class _CheckedClientAuth:
    #: Authlib hands every grant its server; ours is a :class:`ServerContext`.
    server: ServerContext
    """Malformed client credentials are ``invalid_client`` (RFC 6749 §5.2), not a 500."""

    def authenticate_token_endpoint_client(self) -> Any:
        check_client_credentials_syntax(self.request)  # type: ignore[attr-defined]
        return super().authenticate_token_endpoint_client()  # type: ignore[misc]


class _RegisteredScopesOnly:
    """A requested scope the client is not registered for is ``invalid_scope`` (RFC 6749
    §4.1.2.1, redirected at the authorization endpoint; §5.2 at the token endpoint), never
    silently dropped (core/consent.py: unregistered_scopes)."""

    def validate_requested_scope(self) -> None:
        request = self.request  # type: ignore[attr-defined]
        if unregistered_scopes(request.client.row.scope, request.payload.scope):
            # RFC 6749 §5.2 invalid_scope: "The requested scope is invalid, unknown,
            # malformed, or exceeds the scope granted by the resource owner." The values are
            # not quoted (error_description is limited to printable ASCII without '"' or '\\').
            raise InvalidScopeError(
                "a requested scope is not registered for this client", state=request.payload.state
            )
        super().validate_requested_scope()  # type: ignore[misc]


class AuthorizationCodeGrant(
    _CheckedClientAuth,
    _RegisteredScopesOnly,
    grants.AuthorizationCodeGrant,  # type: ignore[misc]
):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: Any) -> str:
        # RFC 6749 §4.1.2.1 / RFC 9700 §4.11.1: an unregistered redirect_uri is never redirected
        # to. Authlib's own message quotes the URI, and its OAuth2Error refuses (ValueError, a
        # 500) a description with '"', '\\' or non-ASCII; this one quotes nothing.
        uri = request.payload.redirect_uri
        if uri and not client.check_redirect_uri(uri):
            raise InvalidRequestError("the redirect_uri is not registered for this client")
        return grants.AuthorizationCodeGrant.validate_authorization_redirect_uri(request, client)  # type: ignore[no-any-return]

    def validate_authorization_request(self) -> Any:
        # A client_id the database cannot hold (NUL, control characters) is an unknown client.
        check_client_credentials_syntax(self.request)
        redirect_uri = super().validate_authorization_request()
        check_nonce(self.request, redirect_uri)  # also without 'openid': the code row stores it
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        user: EndUser = request.user
        settings = self.server.provider.settings
        now = utcnow()
        self.server.db.add(
            AuthorizationCode(
                code_hash=token_hash(code),
                client_id=request.client.get_client_id(),
                redirect_uri=request.payload.redirect_uri or "",
                scope=request.payload.scope or "",
                subject=user.sub,
                sid=user.sid,
                nonce=request.payload.data.get("nonce"),
                auth_time=dt.datetime.fromtimestamp(user.auth_time or now.timestamp(), dt.UTC),
                code_challenge=request.payload.data.get("code_challenge"),
                code_challenge_method=request.payload.data.get("code_challenge_method")
                or ("S256" if request.payload.data.get("code_challenge") else None),
                created_at=now,
                expires_at=now + dt.timedelta(seconds=settings.authorization_code_lifetime),
            )
        )

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        db = self.server.db
        row = db.scalar(
            select(AuthorizationCode).where(
                AuthorizationCode.code_hash == token_hash(code),
                AuthorizationCode.client_id == client.get_client_id(),
            )
        )
        if row is None:
            return None
        if row.used_at is not None:
            self._code_reused(row.id)
            return None
        if row.expires_at <= utcnow():
            return None
        if not code_is_usable(db, row):
            return None  # session ended or cut off since authorization
        # RFC 6749 §10.5: "Authorization codes MUST be short lived and single-use." Claim the
        # code with a compare-and-set in the request transaction: of concurrent requests
        # exactly one sees a row change (PostgreSQL: the others wait on the row lock, then
        # find used_at set; SQLite: writers are serialized). A refused request later on
        # (PKCE, redirect_uri) rolls the claim back with everything else.
        with lock_contention_is_retryable(db):
            claimed = claim_code(db, row.id, utcnow())
        if not claimed:
            self._code_reused(row.id)
            return None
        return row

    def _code_reused(self, code_id: int) -> None:
        # RFC 6749 §4.1.2: "If an authorization code is used more than once, the
        # authorization server MUST deny the request and SHOULD revoke (when possible) all
        # tokens previously issued based on that authorization code."
        db = self.server.db
        # The request transaction is refused anyway; end it first, so the termination's own
        # transaction waits for no lock this request holds (SQLite write lock, PG row locks).
        db.rollback()
        grant_id = db.scalar(select(AuthorizationCode.grant_id).where(AuthorizationCode.id == code_id))
        if grant_id and not grant_is_revoked(db, grant_id):
            log.warning("authorization code reuse detected; revoking grant %s", grant_id)
            with lock_contention_is_retryable(db):
                self.server.provider.terminate_now(
                    by_grant(grant_id), reason="authorization code reused", initiator="token endpoint"
                )
        db.rollback()

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing left to do: :meth:`query_authorization_code` claimed the code (used_at)."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> EndUser | None:
        if not self.server.provider.users.exists(authorization_code.subject):
            user_gone(self.server.provider.session_factory, self.server.db, authorization_code.subject)  # SSF
            return None
        return EndUser(authorization_code.subject, authorization_code.sid, authorization_code.get_auth_time())


class RefreshTokenGrant(_CheckedClientAuth, grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    #: Rotation: every use returns a new refresh token and retires the old one.
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        db = self.server.db
        row = db.scalar(
            select(Token).where(
                Token.token_hash == token_hash(refresh_token), Token.kind == TokenKind.REFRESH_TOKEN
            )
        )
        if row is None:
            return None
        client = getattr(self.request, "client", None)
        if client is None or row.client_id != client.get_client_id():
            # RFC 6749 §6: "validate the refresh token ... and ensure that the refresh token
            # was issued to the authenticated client". Another client presenting it proves
            # nothing about reuse by its holder: refused, and revokes nothing.
            return None
        if row.revoked_at is not None:
            if row.revoked_reason == ROTATED:
                self._refresh_token_reused(row.grant_id)
            return None
        if not token_is_active(db, row):
            return None
        # RFC 9700 §4.14.2: rotation must be atomic, or two concurrent uses of one refresh
        # token fork two live chains that reuse detection never sees. Retire the presented
        # token with a compare-and-set in the request transaction: exactly one request
        # changes the row; the others find it rotated, which is reuse.
        with lock_contention_is_retryable(db):
            retired = retire_refresh_token(db, row.id, utcnow(), ROTATED)
        if not retired:
            reason = db.scalar(select(Token.revoked_reason).where(Token.id == row.id))
            if reason == ROTATED:
                self._refresh_token_reused(row.grant_id)
            return None
        return row

    def _refresh_token_reused(self, grant_id: str) -> None:
        # RFC 9700 §4.14.2: "If a refresh token is compromised and subsequently used by both
        # the attacker and the legitimate client, one of them will present an invalidated
        # refresh token, which will inform the authorization server of the breach." Revoke
        # the whole grant, the legitimate holder's current token included.
        db = self.server.db
        # The request is refused anyway: end its transaction first, so the termination's own
        # transaction waits for no lock this request holds (SQLite write lock, PG row locks).
        db.rollback()
        if not grant_is_revoked(db, grant_id):
            log.warning("refresh token reuse detected; revoking grant %s", grant_id)
            with lock_contention_is_retryable(db):
                self.server.provider.terminate_now(
                    by_grant(grant_id), reason="refresh token reuse detected", initiator="token endpoint"
                )
        db.rollback()

    def authenticate_user(self, refresh_token: Token) -> EndUser | None:
        sub = refresh_token.grant.subject
        if not sub or not self.server.provider.users.exists(sub):
            if sub:
                user_gone(self.server.provider.session_factory, self.server.db, sub)  # SSF
            return None
        return EndUser(sub, refresh_token.grant.sid)

    def revoke_old_credential(self, refresh_token: Token) -> None:
        """Nothing left to do: :meth:`authenticate_refresh_token` retired the token."""


class ClientCredentialsGrant(
    _CheckedClientAuth,
    _RegisteredScopesOnly,
    grants.ClientCredentialsGrant,  # type: ignore[misc]
):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class OpenIDCode(oidc_grants.OpenIDCode):  # type: ignore[misc]
    """ID tokens signed with the OP's jwcrypto-managed keys, carrying ``sid``; issuing one
    records the client as a participant of the OP session (who must hear of its end)."""

    def __init__(self, server: ServerContext) -> None:
        super().__init__(require_nonce=False)
        self.op_server: ServerContext = server

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        # Runs inside Authlib's payload validation, so the error is redirected to the client.
        check_nonce(request)
        db = self.op_server.db
        return (
            db.scalar(
                select(AuthorizationCode.id)
                .where(
                    AuthorizationCode.client_id == request.payload.client_id, AuthorizationCode.nonce == nonce
                )
                .limit(1)
            )
            is not None
        )

    def _key(self, client: Any):  # type: ignore[no-untyped-def]
        return self.op_server.provider.keyring.signing_key(self.get_client_algorithm(client))

    def resolve_client_private_key(self, client: Any) -> Any:
        return signing_key_for_authlib(self._key(client))

    def get_client_algorithm(self, client: Any) -> str:
        return client.id_token_signed_response_alg or self.op_server.provider.settings.default_id_token_alg

    def get_encode_header(self, client: Any) -> dict[str, str]:
        key = self._key(client)
        return {"alg": key.alg, "kid": key.kid, "typ": "JWT"}

    def get_client_claims(self, client: Any) -> dict[str, Any]:
        settings = self.op_server.provider.settings
        now = int(utcnow().timestamp())
        return {
            "iss": settings.issuer,
            "aud": [client.get_client_id()],
            "iat": now,
            "exp": now + settings.id_token_lifetime,
        }

    def get_authorization_code_claims(self, authorization_code: AuthorizationCode) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
        # Core 1.0 / Back-Channel §2.1: "sid (session ID) Claim used in ID Tokens and as a
        # parameter in the Logout Token" identifies the OP session to the RP.
        claims["sid"] = authorization_code.sid
        record_participation(self.op_server.db, authorization_code.sid, authorization_code.client_id)
        return claims

    def generate_user_info(self, user: EndUser, scope: str) -> dict[str, Any]:
        info = dict(self.op_server.provider.users.claims(user.sub, scope))
        info["sub"] = user.sub
        return info


def record_participation(db: Session, sid: str, client_id: str) -> None:
    """Upsert (sid, client_id) into session participants, race-free on both dialects."""
    now = utcnow()
    dialect = db.get_bind().dialect.name
    values = dict(sid=sid, client_id=client_id, first_at=now, last_at=now)
    stmt: Any
    if dialect == "postgresql":
        stmt = (
            pg_insert(SessionParticipant)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["sid", "client_id"], set_={"last_at": now, "ended_at": None}
            )
        )
    else:
        stmt = (
            sqlite_insert(SessionParticipant)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["sid", "client_id"], set_={"last_at": now, "ended_at": None}
            )
        )
    db.execute(stmt)


def save_token(server: ServerContext, token: dict[str, Any], request: Any) -> None:
    """Store the issued tokens as hashes, linked to their grant, client, subject and session."""
    db = server.db
    settings = server.provider.settings
    client = request.client
    client_row = client.row
    now = utcnow()
    scope = token.get("scope", "") or ""
    grant_type = request.payload.grant_type
    if grant_type == "refresh_token":
        grant = request.refresh_token.grant
        # Tokens refreshed from an offline grant after its session ended belong to no session.
        sid = grant.sid if session_is_live(db, grant.sid) else None
        subject = grant.subject
    elif grant_type == "authorization_code":
        code: AuthorizationCode = request.authorization_code
        grant = Grant(
            id=new_id(16),
            client_id=client_row.client_id,
            grant_type=grant_type,
            subject=code.subject,
            sid=code.sid,
            scope=scope,
            offline="offline_access" in scope.split() and "refresh_token" in token,
            credential_version=client_row.secret_version,
            created_at=now,
        )
        db.add(grant)
        code.grant_id = grant.id
        sid, subject = code.sid, code.subject
    else:  # client_credentials
        grant = Grant(
            id=new_id(16),
            client_id=client_row.client_id,
            grant_type=grant_type,
            subject=None,
            sid=None,
            scope=scope,
            offline=False,
            credential_version=client_row.secret_version,
            created_at=now,
        )
        db.add(grant)
        sid, subject = None, None
    db.flush()
    lifetimes = {
        TokenKind.ACCESS_TOKEN: int(token.get("expires_in") or settings.access_token_lifetime),
        TokenKind.REFRESH_TOKEN: settings.refresh_token_lifetime,
    }
    for kind, lifetime in lifetimes.items():
        value = token.get(str(kind))
        if value:
            db.add(
                Token(
                    token_hash=token_hash(value),
                    kind=kind,
                    grant_id=grant.id,
                    client_id=client_row.client_id,
                    subject=subject,
                    sid=sid,
                    scope=scope,
                    issued_at=now,
                    expires_at=now + dt.timedelta(seconds=lifetime),
                )
            )
    db.flush()


def touch_session(db: Session, sid: str) -> None:
    db.execute(update(OPSession).where(OPSession.sid == sid).values(last_seen_at=utcnow()))


__all__ = [
    "MAX_NONCE_LENGTH",
    "ROTATED",
    "AuthorizationCodeGrant",
    "ClientCredentialsGrant",
    "OpenIDCode",
    "RefreshTokenGrant",
    "S256CodeChallenge",
    "TemporarilyUnavailableError",
    "check_nonce",
    "lock_contention_is_retryable",
    "record_participation",
    "save_token",
    "touch_session",
]
