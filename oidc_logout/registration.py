"""RFC 7591 dynamic client registration: metadata validation, composed from each spec's
``registration.py`` (Back-Channel §2.2, Front-Channel §2, RP-Initiated §3.1)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy.orm import Session

from .backchannel import registration as backchannel_registration
from .config import Settings
from .errors import AccessDenied, InvalidClientMetadata, InvalidRedirectURI, InvalidToken
from .frontchannel import registration as frontchannel_registration
from .keys import SUPPORTED_ALGS, signing_algs
from .storage.models import Client
from .tokens import new_id, same_secret, token_hash
from .uris import validate_registered_uri

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
RESPONSE_TYPES = ("code",)
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
#: Fields with columns of their own; the rest of the metadata is kept as registered.
COLUMNS = (
    "redirect_uris",
    "grant_types",
    "response_types",
    "scope",
    "client_name",
    "token_endpoint_auth_method",
    "id_token_signed_response_alg",
    "post_logout_redirect_uris",
    *backchannel_registration.REGISTERED_CLAIMS,
    *frontchannel_registration.REGISTERED_CLAIMS,
)


def _str_list(metadata: dict[str, Any], key: str, default: list[str]) -> list[str]:
    value = metadata.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 50:
        raise InvalidClientMetadata(f"{key} must be an array of at most 50 strings")
    return list(value)


def validate_metadata(
    metadata: object, *, dev_mode: bool, signing_algs: Collection[str] | None = None
) -> dict[str, Any]:
    """Validate RFC 7591 client metadata (with the logout metadata); returns the normalized
    metadata or raises ``invalid_client_metadata`` / ``invalid_redirect_uri`` (RFC 7591 §3.2.2).

    :param signing_algs: the algorithms the OP advertises and holds a signing key for
        (:func:`oidc_logout.keys.signing_algs`); None: every algorithm it can sign with."""
    if not isinstance(metadata, dict):
        raise InvalidClientMetadata("the request body must be a JSON object")
    out: dict[str, Any] = {}
    grant_types = _str_list(metadata, "grant_types", ["authorization_code"])
    if unknown := set(grant_types) - set(GRANT_TYPES):
        raise InvalidClientMetadata(f"unsupported grant_types: {sorted(unknown)}")
    response_types = _str_list(
        metadata, "response_types", ["code"] if "authorization_code" in grant_types else []
    )
    if unknown := set(response_types) - set(RESPONSE_TYPES):
        raise InvalidClientMetadata(f"unsupported response_types: {sorted(unknown)}")
    # RFC 7591 §2.1: grant_types and response_types must be consistent.
    if ("code" in response_types) != ("authorization_code" in grant_types):
        raise InvalidClientMetadata("response_types 'code' goes with grant_types 'authorization_code'")
    out["grant_types"], out["response_types"] = grant_types, response_types

    redirect_uris = _str_list(metadata, "redirect_uris", [])
    if "authorization_code" in grant_types and not redirect_uris:
        raise InvalidRedirectURI("redirect_uris is required for the authorization_code grant")
    out["redirect_uris"] = [
        validate_registered_uri(u, "redirect_uris", dev_mode=dev_mode, redirect=True) for u in redirect_uris
    ]

    method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
    if not isinstance(method, str) or method not in AUTH_METHODS:
        raise InvalidClientMetadata(f"token_endpoint_auth_method must be one of {list(AUTH_METHODS)}")
    if method == "none" and "client_credentials" in grant_types:
        raise InvalidClientMetadata("a public client (auth method 'none') cannot use client_credentials")
    out["token_endpoint_auth_method"] = method

    alg = metadata.get("id_token_signed_response_alg", "RS256")
    # Core Registration §2 allows 'none' only without the code flow; this OP never signs with it.
    # RFC 7591 §2: "the authorization server MAY reject ... values" it does not support, and
    # Discovery §3 lists what it supports in id_token_signing_alg_values_supported: an alg the
    # OP does not advertise (no key for it) would make every code exchange of the client fail.
    offered = set(SUPPORTED_ALGS) if signing_algs is None else set(signing_algs) & set(SUPPORTED_ALGS)
    if not isinstance(alg, str) or alg not in offered:
        raise InvalidClientMetadata(
            f"id_token_signed_response_alg must be one of {sorted(offered)} "
            "(id_token_signing_alg_values_supported)"
        )
    out["id_token_signed_response_alg"] = alg

    scope = metadata.get("scope", "openid profile email offline_access")
    if not isinstance(scope, str) or len(scope) > 1000 or not scope.isprintable():
        raise InvalidClientMetadata("scope must be a space-separated string")
    out["scope"] = scope
    name = metadata.get("client_name")
    # Control characters (NUL: PostgreSQL refuses it in text columns) are refused, not a 500.
    if name is not None and (not isinstance(name, str) or len(name) > 255 or not name.isprintable()):
        raise InvalidClientMetadata("client_name must be a string of at most 255 printable characters")
    out["client_name"] = name

    # rpinitiated §3.1: post_logout_redirect_uris, exact-match targets for redirection.
    out["post_logout_redirect_uris"] = [
        validate_registered_uri(u, "post_logout_redirect_uris", dev_mode=dev_mode)
        for u in _str_list(metadata, "post_logout_redirect_uris", [])
    ]
    backchannel_registration.validate(metadata, out, dev_mode=dev_mode)
    frontchannel_registration.validate(metadata, out, dev_mode=dev_mode)
    return out


#: Scopes that give a client power over other clients' tokens and sessions (the admin API,
#: introspection of any token). Only the operator grants them (clients loaded from
#: configuration, with an explicit client_id), never open dynamic registration.
RESERVED_SCOPE_PREFIX = "oidc_logout:"


def create_client(
    db: Session,
    metadata: dict[str, Any],
    *,
    dev_mode: bool,
    client_id: str | None = None,
    client_secret: str | None = None,
    check_address: Callable[[str], None] | None = None,
    allow_reserved_scopes: bool | None = None,
    reserved_scopes: tuple[str, ...] = (),
    trusted: bool | None = None,
) -> tuple[Client, str | None]:
    """Validate and store a client; returns it with its plaintext secret (shown once).

    :param allow_reserved_scopes: whether the metadata may ask for a reserved scope (any
        ``oidc_logout:*`` scope, and ``reserved_scopes``). ``None`` means: only when the caller
        names the client_id (operator provisioning); RFC 7591 registration never does.
    :param trusted: a first-party client, asked no consent (oidc_logout.core.consent).
        ``None`` means the same rule: trusted only when the operator names the client_id.
    """
    clean = validate_metadata(metadata, dev_mode=dev_mode, signing_algs=signing_algs(db))
    if allow_reserved_scopes is None:
        allow_reserved_scopes = client_id is not None
    if not allow_reserved_scopes:
        reserved = [
            s for s in clean["scope"].split() if s.startswith(RESERVED_SCOPE_PREFIX) or s in reserved_scopes
        ]
        if reserved:
            # RFC 7591 §3.2.2 invalid_client_metadata: "the server has rejected this request".
            raise InvalidClientMetadata(f"scope {reserved} cannot be requested by dynamic registration")
    if check_address is not None and clean.get("backchannel_logout_uri"):
        check_address(clean["backchannel_logout_uri"])
    extra = {
        k: v
        for k, v in metadata.items()
        if k not in COLUMNS
        and k not in ("client_id", "client_secret", "client_id_issued_at", "client_secret_expires_at")
    }
    secret = None
    if clean["token_endpoint_auth_method"] != "none":
        secret = client_secret or secrets.token_urlsafe(32)
    client = Client(
        client_id=client_id or new_id(16),
        client_secret_hash=token_hash(secret) if secret else None,
        extra_metadata=extra,
        trusted=client_id is not None if trusted is None else trusted,
        **clean,
    )
    db.add(client)
    return client, secret


def client_metadata_response(client: Client, secret: str | None) -> dict[str, Any]:
    """RFC 7591 §3.2.1 client information response."""
    body: dict[str, Any] = dict(client.extra_metadata or {})
    for key in COLUMNS:
        value = getattr(client, key)
        if value is not None:
            body[key] = value
    body["client_id"] = client.client_id
    body["client_id_issued_at"] = int(client.created_at.timestamp())
    if secret:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    return body


def check_registration_allowed(settings: Settings, authorization: str | None) -> None:
    """RFC 7591 §3: registration needs the initial access token when one is configured;
    without one it is closed unless the operator opened it (open registration lets any site
    become a client, RFC 9700 §4.11)."""
    expected = settings.registration_token
    if expected:
        if not same_secret(authorization or "", f"Bearer {expected}"):
            raise InvalidToken("an initial access token is required to register (RFC 7591 §3)")
    elif not settings.registration_open:
        # RFC 7591 §3: "the authorization server MAY be configured to accept [...] without
        # an initial access token" - only when the operator says so (registration_open).
        raise AccessDenied("dynamic client registration is closed on this server")


__all__ = [
    "AUTH_METHODS",
    "COLUMNS",
    "GRANT_TYPES",
    "RESERVED_SCOPE_PREFIX",
    "RESPONSE_TYPES",
    "check_registration_allowed",
    "client_metadata_response",
    "create_client",
    "validate_metadata",
]
