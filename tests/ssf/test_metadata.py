"""Transmitter Configuration Metadata (SSF 1.0 §7.1, CAEP Interoperability Profile §2.3) and the
Global Token Revocation member of the authorization server metadata."""

from __future__ import annotations

import requests

from oidc_logout.ssf import POLL, PUSH


def test_transmitter_metadata_has_every_member_the_interop_profile_requires(env_sqlite):
    env = env_sqlite
    resp = requests.get(f"{env.url}/.well-known/ssf-configuration", timeout=10)
    assert resp.status_code == 200
    doc = resp.json()
    # CAEP Interop §2.3.1: spec_version MUST be "1_0" or greater.
    assert doc["spec_version"] == "1_0"
    # SSF §7.1: issuer "MUST be identical to the iss claim value in Security Event Tokens".
    assert doc["issuer"] == env.url
    # CAEP Interop §2.3.3: jwks_uri MUST provide the current signing key (RS256, §2.6).
    jwks = requests.get(doc["jwks_uri"], timeout=10).json()
    assert any(k["alg"] == "RS256" for k in jwks["keys"])
    # CAEP Interop §2.3.2 / §2.3.8.1: delivery_methods_supported with push and poll.
    assert set(doc["delivery_methods_supported"]) == {PUSH, POLL}
    # CAEP Interop §2.3.4-§2.3.6: configuration, status and verification endpoints.
    assert doc["configuration_endpoint"] == f"{env.url}/ssf/stream"
    assert doc["status_endpoint"] == f"{env.url}/ssf/status"
    assert doc["verification_endpoint"] == f"{env.url}/ssf/verify"
    assert doc["add_subject_endpoint"] == f"{env.url}/ssf/subjects:add"
    assert doc["remove_subject_endpoint"] == f"{env.url}/ssf/subjects:remove"
    # CAEP Interop §2.3.7: authorization_schemes MUST include {"spec_urn": "urn:ietf:rfc:6749"}.
    assert {"spec_urn": "urn:ietf:rfc:6749"} in doc["authorization_schemes"]
    # SSF §7.1 default_subjects "ALL" or "NONE"; CAEP Interop §2.4.2: all subjects implicitly.
    assert doc["default_subjects"] == "ALL"


def test_authorization_server_metadata_advertises_global_token_revocation(env_sqlite):
    """draft-parecki-oauth-global-token-revocation §5: global_token_revocation_endpoint."""
    env = env_sqlite
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        doc = requests.get(f"{env.url}{path}", timeout=10).json()
        assert doc["global_token_revocation_endpoint"] == f"{env.url}/global-token-revocation"
