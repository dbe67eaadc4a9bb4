"""The thin stream-management client against the loopback transmitter: metadata from
/.well-known/ssf-configuration (SSF 1.0 §7.2), a client-credentials token, stream creation and
a verification round trip that ends in the receiver's push endpoint."""

from __future__ import annotations

import pytest

from oidc_logout.rp import fetch_transmitter_metadata
from oidc_logout.rp.flask_ssf import SSFPush
from oidc_logout.rp.ssf import SESSION_REVOKED
from oidc_logout.rp.ssf_stream import (
    StreamClient,
    StreamError,
    client_credentials_token,
    ssf_configuration_url,
)

from ..conftest import ServerThread
from ..rp_app import create_app
from .conftest import AUDIENCE, Transmitter, build_validator


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://tr.example.com", "https://tr.example.com/.well-known/ssf-configuration"),
        ("https://tr.example.com/", "https://tr.example.com/.well-known/ssf-configuration"),
        ("https://tr.example.com/issuer1", "https://tr.example.com/.well-known/ssf-configuration/issuer1"),
        ("https://tr.example.com/issuer1/", "https://tr.example.com/.well-known/ssf-configuration/issuer1"),
    ],
)
def test_configuration_url_is_inserted_between_host_and_path(issuer, url):
    """SSF 1.0 §7.2: the well-known string goes between the host and the issuer's path, any
    terminating "/" removed first."""
    assert ssf_configuration_url(issuer) == url


def test_metadata_is_read_and_its_issuer_checked(transmitter: Transmitter):
    """SSF 1.0 §7.2.4: the issuer must be the one the configuration was fetched for."""
    meta = fetch_transmitter_metadata(transmitter.issuer)
    assert meta.configuration_endpoint == f"{transmitter.issuer}/ssf/stream"
    assert meta.jwks_uri == f"{transmitter.issuer}/jwks" and meta.spec_version == "1_0"
    transmitter.metadata_overrides["issuer"] = "https://evil.example"
    with pytest.raises(StreamError) as info:
        fetch_transmitter_metadata(transmitter.issuer)
    assert info.value.reason == "issuer_mismatch"


def test_client_credentials_token_uses_basic_auth_and_the_ssf_scopes(transmitter: Transmitter):
    """RFC 6749 §4.4; CAEP Interoperability Profile §2.7.2 scopes ssf.manage / ssf.read."""
    token = client_credentials_token(f"{transmitter.issuer}/token", "receiver", "receiver-secret")
    assert token == "mgmt-token"
    (req,) = transmitter.token_requests
    assert req["form"] == {"grant_type": "client_credentials", "scope": "ssf.manage ssf.read"}
    with pytest.raises(StreamError):
        client_credentials_token(f"{transmitter.issuer}/token", "receiver", "wrong")


def test_poll_stream_gets_its_endpoint_from_the_transmitter(transmitter: Transmitter):
    """SSF 1.0 §6.1.2: for poll delivery the transmitter supplies endpoint_url."""
    client = StreamClient(fetch_transmitter_metadata(transmitter.issuer), "mgmt-token")
    stream = client.create_poll_stream([SESSION_REVOKED], expected_audience=AUDIENCE)
    assert stream.method == "urn:ietf:rfc:8936" and stream.endpoint_url.endswith(stream.stream_id)
    assert client.get_stream(stream.stream_id).stream_id == stream.stream_id
    assert client.get_status(stream.stream_id) == "enabled"


def test_stream_from_another_issuer_or_for_another_audience_is_refused(transmitter: Transmitter):
    """SSF 1.0 §8.1.1.1: the receiver MUST confirm iss; §8.1.1.1.1 it SHOULD validate aud."""
    client = StreamClient(fetch_transmitter_metadata(transmitter.issuer), "mgmt-token")
    with pytest.raises(StreamError) as info:
        client.create_poll_stream([SESSION_REVOKED], expected_audience="https://not-me.example")
    assert info.value.reason == "aud_mismatch"
    transmitter.stream_overrides["iss"] = "https://evil.example"
    with pytest.raises(StreamError) as info:
        client.create_poll_stream([SESSION_REVOKED])
    assert info.value.reason == "issuer_mismatch"


def test_management_call_without_a_valid_token_fails_cleanly(transmitter: Transmitter):
    client = StreamClient(fetch_transmitter_metadata(transmitter.issuer), "expired")
    with pytest.raises(StreamError) as info:
        client.create_poll_stream([SESSION_REVOKED])
    assert "401" in info.value.description


def test_push_stream_is_created_and_verified_end_to_end(transmitter: Transmitter, ssf_clock):
    """Create a push stream, request verification (SSF 1.0 §8.1.4.2): the transmitter pushes a
    verification SET carrying the state, the receiver answers 202 and records the stream as
    verified."""
    app, _ = create_app(transmitter.issuer)
    ssf = SSFPush(app, validator=build_validator(transmitter, ssf_clock), push_authorization="Bearer p")
    server = ServerThread(app)
    try:
        token = client_credentials_token(f"{transmitter.issuer}/token", "receiver", "receiver-secret")
        client = StreamClient(fetch_transmitter_metadata(transmitter.issuer), token)
        stream = client.create_push_stream(
            f"{server.url}/ssf/events",
            [SESSION_REVOKED],
            authorization_header="Bearer p",
            expected_audience=AUDIENCE,
        )
        receiver = ssf.receiver
        assert receiver is not None
        receiver.set_stream(stream.stream_id)
        state = client.request_verification(stream.stream_id, receiver)
        assert transmitter.pushed.wait(10)
        assert transmitter.pushes[0].status_code == 202
        assert receiver.stream.verified_state == state and receiver.stream.verified_at is not None
    finally:
        server.stop()
