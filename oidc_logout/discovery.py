"""OpenID Connect Discovery 1.0 §3 / RFC 8414 §2: the OP metadata document.

Lists exactly what this OP supports; each logout spec adds its keys from its own
``discovery.py``."""

from __future__ import annotations

from typing import Any

from .backchannel import discovery as backchannel_discovery
from .frontchannel import discovery as frontchannel_discovery


def provider_metadata(issuer: str, endpoints: dict[str, str], algs: list[str]) -> dict[str, Any]:
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    doc: dict[str, Any] = {
        "issuer": issuer,
        **endpoints,
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "sid",
            "amr",
            "name",
            "preferred_username",
            "email",
            "email_verified",
        ],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }
    doc.update(backchannel_discovery.metadata())
    doc.update(frontchannel_discovery.metadata())
    return doc


__all__ = ["provider_metadata"]
