"""Authlib grants backed by oidc_logout storage.

The grants reach the request's database session and the provider through ``self.server``
(an :class:`oidc_logout.flask.server.OPServer`): ``server.db`` and ``server.provider``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import grants as oidc_grants
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..protocols import EndUser
from .client import check_client_credentials_syntax
from .consent import unregistered_scopes
from ..storage.base import utcnow
from ..storage.queries import session_is_live
from ..storage.models import AuthorizationCode, Grant, OPSession, SessionParticipant, Token
from ..termination import by_grant
from ..tokens import new_id, token_hash

log = logging.getLogger(__name__)


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
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > MAX_NONCE_LENGTH
                              or not nonce.isprintable()):
        raise InvalidRequestError(f"'nonce' must be at most {MAX_NONCE_LENGTH} printable characters",
                                  redirect_uri=redirect_uri)


class _CheckedClientAuth:
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
            raise InvalidScopeError("a requested scope is not registered for this client",
                                    state=request.payload.state)
        super().validate_requested_scope()  # type: ignore[misc]


class AuthorizationCodeGrant(_CheckedClientAuth, _RegisteredScopesOnly,  # type: ignore[misc]
                             grants.AuthorizationCodeGrant):
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
        self.server.db.add(AuthorizationCode(
            code_hash=token_hash(code),
            client_id=request.client.get_client_id(),
            redirect_uri=request.payload.redirect_uri or "",
            scope=request.payload.scope or "",
            subject=user.sub,
            sid=user.sid,
            nonce=request.payload.data.get("nonce"),
            auth_time=dt.datetime.fromtimestamp(user.auth_time or now.timestamp(), dt.timezone.utc),
            code_challenge=request.payload.data.get("code_challenge"),
            code_challenge_method=request.payload.data.get("code_challenge_method") or (
                "S256" if request.payload.data.get("code_challenge") else None),
            created_at=now,
            expires_at=now + dt.timedelta(seconds=settings.authorization_code_lifetime),
        ))

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        db = self.server.db
        row = db.scalar(select(AuthorizationCode).where(
            AuthorizationCode.code_hash == token_hash(code),
            AuthorizationCode.client_id == client.get_client_id()))
        if row is None:
            return None
        if row.used_at is not None:
            # RFC 6749 §4.1.2: "If an authorization code is used more than once, the
            # authorization server MUST deny the request and SHOULD revoke (when possible) all
            # tokens previously issued based on that authorization code."
            if row.grant_id:
                self.server.provider.terminate_now(by_grant(row.grant_id),
                                                   reason="authorization code reused",
                                                   initiator="token endpoint")
            return None
        if row.expires_at <= utcnow():
            return None
        if not session_is_live(db, row.sid):
            return None  # the session ended between authorization and token request
        return row

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        authorization_code.used_at = utcnow()

    def authenticate_user(self, authorization_code: AuthorizationCode) -> EndUser | None:
        if not self.server.provider.users.exists(authorization_code.subject):
            return None
        return EndUser(authorization_code.subject, authorization_code.sid,
                       authorization_code.get_auth_time())


class RefreshTokenGrant(_CheckedClientAuth, grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    #: Rotation: every use returns a new refresh token and retires the old one.
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        db = self.server.db
        row = db.scalar(select(Token).where(Token.token_hash == token_hash(refresh_token),
                                            Token.kind == "refresh_token"))
        if row is None:
            return None
        if row.revoked_at is not None:
            if row.revoked_reason == "rotated" and row.grant.revoked_at is None:
                # RFC 9700 §4.14.2: a rotated refresh token presented again means it leaked;
                # revoke the whole grant, the legitimate holder's current token included.
                log.warning("refresh token reuse detected; revoking grant %s", row.grant_id)
                self.server.provider.terminate_now(
                    by_grant(row.grant_id), reason="refresh token reuse detected",
                    initiator="token endpoint")
            return None
        if row.is_expired() or row.grant.revoked_at is not None:
            return None
        if row.grant.sid and not row.grant.offline and not session_is_live(db, row.grant.sid):
            return None
        return row

    def authenticate_user(self, refresh_token: Token) -> EndUser | None:
        sub = refresh_token.grant.subject
        if not sub or not self.server.provider.users.exists(sub):
            return None
        return EndUser(sub, refresh_token.grant.sid)

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.revoked_at = utcnow()
        refresh_token.revoked_reason = "rotated"


class ClientCredentialsGrant(_CheckedClientAuth, _RegisteredScopesOnly,  # type: ignore[misc]
                             grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class OpenIDCode(oidc_grants.OpenIDCode):  # type: ignore[misc]
    """ID tokens signed with the OP's jwcrypto-managed keys, carrying ``sid``; issuing one
    records the client as a participant of the OP session (who must hear of its end)."""

    def __init__(self, server: Any) -> None:
        super().__init__(require_nonce=False)
        self.op_server = server

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        # Runs inside Authlib's payload validation, so the error is redirected to the client.
        check_nonce(request)
        db = self.op_server.db
        return db.scalar(select(AuthorizationCode.id).where(
            AuthorizationCode.client_id == request.payload.client_id,
            AuthorizationCode.nonce == nonce).limit(1)) is not None

    def _key(self, client: Any):  # type: ignore[no-untyped-def]
        return self.op_server.provider.keyring.signing_key(self.get_client_algorithm(client))

    def resolve_client_private_key(self, client: Any) -> dict[str, Any]:
        return self._key(client).key.export(private_key=True, as_dict=True)

    def get_client_algorithm(self, client: Any) -> str:
        return client.id_token_signed_response_alg or self.op_server.provider.settings.default_id_token_alg

    def get_encode_header(self, client: Any) -> dict[str, str]:
        key = self._key(client)
        return {"alg": key.alg, "kid": key.kid, "typ": "JWT"}

    def get_client_claims(self, client: Any) -> dict[str, Any]:
        settings = self.op_server.provider.settings
        now = int(utcnow().timestamp())
        return {"iss": settings.issuer, "aud": [client.get_client_id()], "iat": now,
                "exp": now + settings.id_token_lifetime}

    def get_authorization_code_claims(self, authorization_code: AuthorizationCode) -> dict[str, Any]:
        claims = super().get_authorization_code_claims(authorization_code)
        # Core 1.0 / Back-Channel §2.1: "sid (session ID) Claim used in ID Tokens and as a
        # parameter in the Logout Token" identifies the OP session to the RP.
        claims["sid"] = authorization_code.sid
        record_participation(self.op_server.db, authorization_code.sid, authorization_code.client_id)
        return claims

    def generate_user_info(self, user: EndUser, scope: str) -> dict[str, Any]:
        info = dict(self.op_server.provider.users.claims(user.sub, scope))
        info["sub"] = user.sub
        return info


def record_participation(db: Any, sid: str, client_id: str) -> None:
    """Upsert (sid, client_id) into session participants, race-free on both dialects."""
    now = utcnow()
    dialect = db.get_bind().dialect.name
    values = dict(sid=sid, client_id=client_id, first_at=now, last_at=now)
    stmt: Any
    if dialect == "postgresql":
        stmt = pg_insert(SessionParticipant).values(**values).on_conflict_do_update(
            index_elements=["sid", "client_id"], set_={"last_at": now, "ended_at": None})
    else:
        stmt = sqlite_insert(SessionParticipant).values(**values).on_conflict_do_update(
            index_elements=["sid", "client_id"], set_={"last_at": now, "ended_at": None})
    db.execute(stmt)


def save_token(server: Any, token: dict[str, Any], request: Any) -> None:
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
        grant = Grant(id=new_id(16), client_id=client_row.client_id, grant_type=grant_type,
                      subject=code.subject, sid=code.sid, scope=scope,
                      offline="offline_access" in scope.split() and "refresh_token" in token,
                      credential_version=client_row.secret_version, created_at=now)
        db.add(grant)
        code.grant_id = grant.id
        sid, subject = code.sid, code.subject
    else:  # client_credentials
        grant = Grant(id=new_id(16), client_id=client_row.client_id, grant_type=grant_type,
                      subject=None, sid=None, scope=scope, offline=False,
                      credential_version=client_row.secret_version, created_at=now)
        db.add(grant)
        sid, subject = None, None
    db.flush()
    access = token.get("access_token")
    if access:
        db.add(Token(token_hash=token_hash(access), kind="access_token", grant_id=grant.id,
                     client_id=client_row.client_id, subject=subject, sid=sid, scope=scope,
                     issued_at=now,
                     expires_at=now + dt.timedelta(seconds=int(token.get("expires_in") or
                                                                settings.access_token_lifetime))))
    refresh = token.get("refresh_token")
    if refresh:
        db.add(Token(token_hash=token_hash(refresh), kind="refresh_token", grant_id=grant.id,
                     client_id=client_row.client_id, subject=subject, sid=sid, scope=scope,
                     issued_at=now,
                     expires_at=now + dt.timedelta(seconds=settings.refresh_token_lifetime)))
    db.flush()


def touch_session(db: Any, sid: str) -> None:
    db.execute(update(OPSession).where(OPSession.sid == sid).values(last_seen_at=utcnow()))
