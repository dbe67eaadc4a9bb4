"""The OAuth 2.0 / OpenID Connect provider, wired as Authlib's Flask guides describe it.

* authorization server: ``AuthorizationServer`` with ``create_query_client_func`` and
  ``create_save_token_func`` over the SQLAlchemy models;
* grants: authorization code with the ``OpenIDCode`` and PKCE (``CodeChallenge``, S256)
  extensions, refresh token (rotating), client credentials;
* endpoints: OpenID Connect UserInfo, RFC 7591 dynamic client registration (RFC 7009
  revocation at ``/oauth/revoke`` is oidc-logout's, registered on this server);
* RFC 9207 ``iss`` in authorization responses;
* a ``ResourceProtector`` with ``create_bearer_token_validator`` for our own APIs.

Implicit and hybrid flows are left out on purpose (RFC 9700 §2.1.2: the implicit grant
SHOULD NOT be used).

The server objects are module-level, as in the guide. Grants and endpoints are registered
once, at import; ``config_oauth(app)`` binds an application. Everything that differs per
application (issuer, signing key, dev mode) is read from ``current_app`` at request time, so
several applications can live in one process (the tests start one per database).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.integrations.sqla_oauth2 import (
    create_bearer_token_validator,
    create_query_client_func,
    create_save_token_func,
)
from authlib.oauth2.rfc6749 import InvalidRequestError, grants
from authlib.oauth2.rfc6750 import InvalidTokenError
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint
from authlib.oauth2.rfc7591.errors import InvalidClientMetadataError, InvalidRedirectURIError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import UserInfo
from authlib.oidc.core import UserInfoEndpoint as _UserInfoEndpoint
from authlib.oidc.core import grants as oidc_grants
from authlib.oidc.registration import ClientMetadataClaims as OIDCClientMetadataClaims
from authlib.oidc.rpinitiated import ClientMetadataClaims as RPInitiatedClaims
from flask import Flask, current_app, session
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, RSAKey
from sqlalchemy.exc import IntegrityError

from oidc_logout.op import BackchannelLogoutClaims, FrontchannelLogoutClaims, OIDCLogout, SessionIDMixin

from .models import OAuth2AuthorizationCode, OAuth2Client, OAuth2Token, SigningKey, User, db

SCOPES_SUPPORTED = ["openid", "profile", "email"]
#: oidc-logout's admin API and SSF stream management: for clients from the clients file only.
OPERATOR_SCOPES = ["oidc_logout:admin", "ssf.manage", "ssf.read", "global_token_revocation"]
TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
ID_TOKEN_ALG = "RS256"
#: RFC 7591 client metadata is validated by these claims classes, for registration and for
#: the clients file alike.
CLIENT_METADATA_CLAIMS = [ClientMetadataClaims, OIDCClientMetadataClaims, RPInitiatedClaims]
LOGOUT_CLAIMS = [BackchannelLogoutClaims, FrontchannelLogoutClaims]  # dev mode: configured per app


def issuer() -> str:
    return str(current_app.config["ISSUER"])


# -- signing keys ----------------------------------------------------------------------------
def ensure_signing_key() -> None:
    """Generate the ID token signing key on first start; later starts reuse the stored one."""
    if db.session.scalar(db.select(SigningKey.id).limit(1)) is not None:
        return
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": ID_TOKEN_ALG}, auto_kid=True)
    db.session.add(SigningKey(kid=key.kid, private_jwk=json.dumps(key.as_dict(private=True))))
    try:
        db.session.commit()
    except IntegrityError:  # another process generated one at the same moment: keep both
        db.session.rollback()


def signing_keys() -> list[RSAKey]:
    rows = db.session.scalars(db.select(SigningKey).order_by(SigningKey.id)).all()
    return [RSAKey.import_key(json.loads(row.private_jwk)) for row in rows]


def current_signing_key() -> RSAKey:
    """The oldest key signs; all stored keys are published, so a token signed by any verifies."""
    keys = signing_keys()
    if not keys:
        raise RuntimeError("no signing key: create_app() generates one at start")
    return keys[0]


def public_jwks() -> dict[str, Any]:
    keys: list[Key] = [*signing_keys()]
    return dict(KeySet(keys).as_dict(private=False))


def published_jwks() -> dict[str, Any]:
    """Our ID token keys and oidc-logout's logout token keys."""
    return {"keys": public_jwks()["keys"] + oidc.jwks()["keys"]}


# -- discovery -------------------------------------------------------------------------------
def server_metadata() -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 / RFC 8414 metadata."""
    iss = issuer()
    return {
        "issuer": iss,
        "authorization_endpoint": f"{iss}/oauth/authorize",
        "token_endpoint": f"{iss}/oauth/token",
        "userinfo_endpoint": f"{iss}/oauth/userinfo",
        "jwks_uri": f"{iss}/oauth/jwks",
        "registration_endpoint": f"{iss}/oauth/register",
        "revocation_endpoint": f"{iss}/oauth/revoke",
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ID_TOKEN_ALG],
        "userinfo_signing_alg_values_supported": [ID_TOKEN_ALG],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "name",
            "preferred_username",
            "email",
        ],
        "authorization_response_iss_parameter_supported": True,
        **oidc.metadata(),
    }


# -- users -----------------------------------------------------------------------------------
def generate_user_info(user: User, scope: str) -> UserInfo:
    claims = {
        "sub": str(user.id),
        "name": user.name or user.username,
        "preferred_username": user.username,
        "email": user.email,
    }
    return UserInfo({k: v for k, v in claims.items() if v is not None}).filter(scope)


def exists_nonce(nonce: str, request: Any) -> bool:
    code = db.session.scalar(
        db.select(OAuth2AuthorizationCode.id)
        .filter_by(client_id=request.payload.client_id, nonce=nonce)
        .limit(1)
    )
    return code is not None


# -- grants ----------------------------------------------------------------------------------
class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS

    def save_authorization_code(self, code: str, request: Any) -> OAuth2AuthorizationCode:
        data = request.payload.data
        item = OAuth2AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            user_id=request.user.id,
            nonce=data.get("nonce"),
            # when the user signed in (routes.login), not when the code was issued
            auth_time=session.get("auth_time") or int(time.time()),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )
        db.session.add(item)
        db.session.commit()
        return item

    def query_authorization_code(self, code: str, client: OAuth2Client) -> OAuth2AuthorizationCode | None:
        item = db.session.scalar(
            db.select(OAuth2AuthorizationCode).filter_by(code=code, client_id=client.client_id)
        )
        if item and not item.is_expired():
            return item
        return None

    def delete_authorization_code(self, authorization_code: OAuth2AuthorizationCode) -> None:
        db.session.delete(authorization_code)
        db.session.commit()

    def authenticate_user(self, authorization_code: OAuth2AuthorizationCode) -> User | None:
        return db.session.get(User, authorization_code.user_id)


class OpenIDCode(SessionIDMixin, oidc_grants.OpenIDCode):
    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return exists_nonce(nonce, request)

    def resolve_client_private_key(self, client: OAuth2Client) -> RSAKey:
        return current_signing_key()

    def get_client_algorithm(self, client: OAuth2Client) -> str:
        # One algorithm for every client; registration only accepts this one.
        return ID_TOKEN_ALG

    def get_encode_header(self, client: OAuth2Client) -> dict[str, str]:
        return {"alg": ID_TOKEN_ALG, "kid": str(current_signing_key().kid)}

    def get_client_claims(self, client: OAuth2Client) -> dict[str, Any]:
        return {"iss": issuer(), "aud": [client.client_id]}

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        return generate_user_info(user, scope)


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only (RFC 9700 §2.1.1: "plain" SHOULD NOT be used); public clients
    must use it."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            # Authlib takes an omitted method as RFC 7636's default, "plain".
            raise InvalidRequestError("code_challenge_method must be S256")
        if not data.get("code_challenge") and grant.request.client.token_endpoint_auth_method == "none":
            # RFC 9700 §2.1.1: public clients MUST use PKCE. Authlib would refuse the code
            # only at the token endpoint; refuse the request before the user is asked.
            raise InvalidRequestError("code_challenge is required for public clients")
        super().validate_code_challenge(grant, redirect_uri)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS
    #: Rotate refresh tokens (RFC 9700 §4.14.2: public clients' refresh tokens must be rotated
    #: or sender-constrained).
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> OAuth2Token | None:
        token = db.session.scalar(db.select(OAuth2Token).filter_by(refresh_token=refresh_token))
        if token and token.is_refresh_token_active():
            return token
        return None

    def authenticate_user(self, credential: OAuth2Token) -> User | None:
        return db.session.get(User, credential.user_id) if credential.user_id else None

    def revoke_old_credential(self, credential: OAuth2Token) -> None:
        now = int(time.time())
        credential.refresh_token_revoked_at = now
        credential.access_token_revoked_at = now
        db.session.add(credential)
        db.session.commit()


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]


# -- endpoints -------------------------------------------------------------------------------
class UserInfoEndpoint(_UserInfoEndpoint):
    def get_issuer(self) -> str:
        return issuer()

    def generate_user_info(self, user: User | None, scope: str) -> UserInfo:
        if user is None:  # a client_credentials token carries no user
            raise InvalidTokenError("The access token does not belong to a user.")
        return generate_user_info(user, scope)

    def resolve_private_key(self) -> RSAKey:
        return current_signing_key()

    def get_supported_algorithms(self) -> list[str]:
        return [ID_TOKEN_ALG]


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_client_metadata(data: Mapping[str, Any], *, operator: bool = False) -> dict[str, Any]:
    """Validate RFC 7591 / OpenID Connect Registration client metadata against this server's
    metadata and local policy; return the registered claims with RFC 7591 defaults filled in.

    Raises ``InvalidClientMetadataError`` or ``InvalidRedirectURIError``.
    """
    metadata = server_metadata()
    if operator:
        metadata["scopes_supported"] = SCOPES_SUPPORTED + OPERATOR_SCOPES
    result: dict[str, Any] = {}
    dev_mode = bool(current_app.config.get("DEV_MODE"))
    for claims_class in CLIENT_METADATA_CLAIMS + [c.configured(dev_mode=dev_mode) for c in LOGOUT_CLAIMS]:
        options = (
            claims_class.get_claims_options(metadata) if hasattr(claims_class, "get_claims_options") else {}
        )
        claims = claims_class(dict(data), {}, options, metadata)
        try:
            claims.validate()
        except JoseError as error:
            raise InvalidClientMetadataError(error.description) from error
        result.update(claims.get_registered_claims())

    # RFC 7591 §2: "If omitted, the default is that the client will use only the
    # "authorization_code" Grant Type" / "... only the "code" response type".
    result.setdefault("grant_types", ["authorization_code"])
    result.setdefault("response_types", ["code"] if "authorization_code" in result["grant_types"] else [])
    # RFC 7591 §2 (scope): "If omitted, an authorization server MAY register a client with a
    # default set of scopes."
    result.setdefault("scope", " ".join(SCOPES_SUPPORTED))

    redirect_uris = result.get("redirect_uris") or []
    if "authorization_code" in result["grant_types"] and not redirect_uris:
        # RFC 7591 §2: clients using flows with redirection MUST register their redirection URIs.
        raise InvalidRedirectURIError("redirect_uris is required for the authorization_code grant")
    if not current_app.config.get("DEV_MODE"):
        for uri in redirect_uris:
            parts = urlsplit(uri)
            if parts.scheme != "https" or _is_loopback(parts.hostname):
                raise InvalidRedirectURIError(
                    f"{uri!r}: redirect URIs must be https and not loopback (run with --dev to allow them)"
                )
    return result


class ClientRegistration(ClientRegistrationEndpoint):
    """RFC 7591. Guarded by an initial access token (RFC 7591 §3) when ``REGISTRATION_TOKEN``
    is configured; without one, registration is open in dev mode and closed otherwise."""

    def authenticate_token(self, request: Any) -> str | None:
        expected = current_app.config.get("REGISTRATION_TOKEN")
        if not expected:
            return "open-registration" if current_app.config.get("DEV_MODE") else None
        scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(value.strip().encode(), expected.encode()):
            return "initial-access-token"
        raise InvalidTokenError("A valid initial access token is required to register a client.")

    def get_server_metadata(self) -> dict[str, Any]:
        return server_metadata()

    def extract_client_metadata(self, request: Any) -> dict[str, Any]:
        if not isinstance(request.payload.data, dict) or not request.payload.data:
            raise InvalidRequestError("Client metadata must be a JSON object.")
        return validate_client_metadata(request.payload.data)

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        info = super().generate_client_info(request)
        if request.payload.data.get("token_endpoint_auth_method") == "none":
            # a public client gets no secret (RFC 7591 §3.2.1: client_secret is OPTIONAL)
            info.pop("client_secret")
            info.pop("client_secret_expires_at")
        return info

    def save_client(
        self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any
    ) -> OAuth2Client:
        client = OAuth2Client(
            client_id=client_info["client_id"],
            # the mixin compares secrets with secrets.compare_digest, which refuses None
            client_secret=client_info.get("client_secret", ""),
            client_id_issued_at=client_info["client_id_issued_at"],
            client_secret_expires_at=client_info.get("client_secret_expires_at", 0),
        )
        client.set_client_metadata(client_metadata)
        db.session.add(client)
        db.session.commit()
        return client


class Issuer(IssuerParameter):
    """RFC 9207: ``iss`` in every authorization response, errors included."""

    def get_issuer(self) -> str:
        return issuer()


# -- clients from the deployment -------------------------------------------------------------
def load_clients(items: Iterable[Mapping[str, Any]]) -> list[OAuth2Client]:
    """Create or update clients from RFC 7591 metadata carrying ``client_id`` and
    ``client_secret`` (omit the secret for ``token_endpoint_auth_method: none``)."""
    clients = []
    for item in items:
        data = dict(item)
        client_id = data.pop("client_id", None)
        secret = data.pop("client_secret", None)
        if not isinstance(client_id, str) or not 0 < len(client_id) <= 48:
            raise ValueError(f"client_id must be a string of 1 to 48 characters: {client_id!r}")
        try:
            metadata = validate_client_metadata(data, operator=True)
        except (InvalidClientMetadataError, InvalidRedirectURIError) as error:
            raise ValueError(f"client {client_id!r}: {error.error}: {error.description}") from error
        if metadata["token_endpoint_auth_method"] != "none" and not secret:
            raise ValueError(
                f"client {client_id!r}: client_secret is required for "
                f"{metadata['token_endpoint_auth_method']}"
            )
        client = db.session.scalar(db.select(OAuth2Client).filter_by(client_id=client_id))
        if client is None:
            client = OAuth2Client(client_id=client_id, client_id_issued_at=int(time.time()))
            db.session.add(client)
        client.client_secret = secret or ""
        client.set_client_metadata(metadata)
        clients.append(client)
    db.session.commit()
    return clients


# -- the servers -----------------------------------------------------------------------------
authorization = AuthorizationServer(
    query_client=create_query_client_func(db.session, OAuth2Client),
    save_token=create_save_token_func(db.session, OAuth2Token),
)
require_oauth = ResourceProtector()
require_oauth.register_token_validator(create_bearer_token_validator(db.session, OAuth2Token)())

authorization.register_grant(
    AuthorizationCodeGrant, [OpenIDCode(require_nonce=False), S256CodeChallenge(required=True)]
)
authorization.register_grant(RefreshTokenGrant)
authorization.register_grant(ClientCredentialsGrant)
authorization.register_endpoint(UserInfoEndpoint(resource_protector=require_oauth))
authorization.register_endpoint(ClientRegistration(claims_classes=CLIENT_METADATA_CLAIMS))
authorization.register_extension(Issuer())
oidc = OIDCLogout(
    server=authorization,
    token_model=OAuth2Token,
    client_model=OAuth2Client,
    db=db,
    id_token_jwks=public_jwks,
    url_prefix="/oidc",
)


def config_oauth(app: Flask) -> None:
    app.config.setdefault("OAUTH2_SCOPES_SUPPORTED", SCOPES_SUPPORTED + OPERATOR_SCOPES)
    app.config.setdefault("OAUTH2_REFRESH_TOKEN_GENERATOR", True)
    # Authlib's default lifetime for authorization_code tokens is ten days; one hour here.
    app.config.setdefault(
        "OAUTH2_TOKEN_EXPIRES_IN",
        {"authorization_code": 3600, "refresh_token": 3600, "client_credentials": 3600},
    )
    authorization.init_app(app)
    app.config.setdefault("OIDC_LOGOUT_ISSUER", app.config["ISSUER"])
    app.config.setdefault("OIDC_LOGOUT_DEV_MODE", bool(app.config.get("DEV_MODE")))
    oidc.init_app(app)
