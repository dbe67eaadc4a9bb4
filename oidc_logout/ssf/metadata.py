"""Transmitter Configuration Metadata (SSF 1.0 §7.1), served at
``/.well-known/ssf-configuration`` (§7.2). (The Global Token Revocation endpoint is advertised
in the authorization server metadata by the route table's ``global_token_revocation_endpoint``
member, draft-parecki-oauth-global-token-revocation §5.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import POLL, PUSH

__all__ = ["SPEC_VERSION", "WELL_KNOWN", "transmitter_metadata"]

#: SSF §7.1 ``spec_version`` of the final specification (CAEP Interop §2.3.1: "1_0" or greater).
SPEC_VERSION = "1_0"
#: SSF §7.2: the well-known path (inserted between host and the issuer's path component).
WELL_KNOWN = "/.well-known/ssf-configuration"

#: Route table metadata member -> SSF §7.1 member.
ENDPOINT_MEMBERS = (
    "configuration_endpoint",
    "status_endpoint",
    "add_subject_endpoint",
    "remove_subject_endpoint",
    "verification_endpoint",
)


def transmitter_metadata(issuer: str, jwks_uri: str, endpoints: Mapping[str, str]) -> dict[str, Any]:
    """The metadata document. ``endpoints`` maps the §7.1 endpoint members to their URLs."""
    doc: dict[str, Any] = {
        "spec_version": SPEC_VERSION,
        # §7.1: "This MUST be identical to the iss claim value in Security Event Tokens".
        "issuer": issuer,
        # CAEP Interop §2.3.3: MUST include jwks_uri providing the current signing key.
        "jwks_uri": jwks_uri,
        # CAEP Interop §2.3.2 / §2.3.8.1: push and poll.
        "delivery_methods_supported": [PUSH, POLL],
        # CAEP Interop §2.3.7: MUST include {"spec_urn": "urn:ietf:rfc:6749"}.
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
        # CAEP Interop §2.4.2: receivers assume every subject is in a stream implicitly.
        "default_subjects": "ALL",
    }
    for member in ENDPOINT_MEMBERS:
        if member in endpoints:
            doc[member] = endpoints[member]
    return doc
