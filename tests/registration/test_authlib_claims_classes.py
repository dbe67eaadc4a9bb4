"""A host IdP's own RFC 7591 endpoint (Authlib's ClientRegistrationEndpoint on Authlib's Flask
AuthorizationServer) accepts and validates the logout metadata through this package's claims
classes, with the same rules as the package's own registration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import rfc7591
from authlib.oidc import rpinitiated
from flask import Flask

from oidc_logout.registration_claims import BackchannelLogoutClaims, FrontchannelLogoutClaims
from tests.support.servers import LiveServer


class _HostRegistration(rfc7591.ClientRegistrationEndpoint):  # type: ignore[misc]
    """What a host writes today: an initial access token check and its own client store."""

    saved: list[dict[str, Any]]

    def authenticate_token(self, request: Any) -> Any:
        return object() if request.headers.get("Authorization") == "Bearer host-iat" else None

    def get_server_metadata(self) -> dict[str, Any]:
        return {}

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> Any:
        self.saved.append(client_metadata)
        return _Client(client_info, client_metadata)


class _Client:
    def __init__(self, info: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.client_info, self.client_metadata = info, metadata


def _host(dev_mode: bool) -> tuple[Flask, list[dict[str, Any]]]:
    app = Flask("host")
    server = AuthorizationServer(app, query_client=lambda cid: None, save_token=lambda t, r: None)
    saved: list[dict[str, Any]] = []
    endpoint = _HostRegistration(
        claims_classes=[
            rfc7591.ClientMetadataClaims,
            rpinitiated.ClientMetadataClaims,
            BackchannelLogoutClaims.configured(dev_mode=dev_mode),
            FrontchannelLogoutClaims.configured(dev_mode=dev_mode),
        ]
    )
    endpoint.saved = saved
    server.register_endpoint(endpoint)

    @app.post("/oauth/register")
    def register():  # type: ignore[no-untyped-def]
        return server.create_endpoint_response("client_registration")

    return app, saved


@pytest.fixture(params=[False, True], ids=["production", "dev"])
def host(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[dict[str, Any]], bool]]:
    app, saved = _host(request.param)
    server = LiveServer(app).start()
    yield server.url, saved, request.param
    server.stop()


def _register(url: str, **metadata: Any) -> requests.Response:
    body = {"client_name": "rp", "redirect_uris": ["https://rp.example.com/cb"], **metadata}
    return requests.post(
        f"{url}/oauth/register", json=body, timeout=10, headers={"Authorization": "Bearer host-iat"}
    )


def test_logout_metadata_is_accepted_and_stored_by_the_hosts_endpoint(host):
    url, saved, _ = host
    resp = _register(
        url,
        backchannel_logout_uri="https://rp.example.com/bc",
        backchannel_logout_session_required=True,
        frontchannel_logout_uri="https://rp.example.com/fc",
        post_logout_redirect_uris=["https://rp.example.com/bye"],
    )
    assert resp.status_code == 201, resp.text
    assert saved[-1]["backchannel_logout_uri"] == "https://rp.example.com/bc"
    assert saved[-1]["backchannel_logout_session_required"] is True
    assert saved[-1]["frontchannel_logout_uri"] == "https://rp.example.com/fc"
    assert saved[-1]["frontchannel_logout_session_required"] is False
    assert resp.json()["backchannel_logout_uri"] == "https://rp.example.com/bc"


@pytest.mark.parametrize(
    "metadata",
    [
        # Back-Channel §2.2: "The backchannel_logout_uri MUST NOT include any fragment component."
        {"backchannel_logout_uri": "https://rp.example.com/bc#frag"},
        # §2.2: the URI MUST be absolute.
        {"backchannel_logout_uri": "/relative"},
        {"backchannel_logout_session_required": "yes"},
        # Front-Channel §2: same scheme, host and port as a registered redirect_uri.
        {"frontchannel_logout_uri": "https://elsewhere.example.com/fc"},
        {"frontchannel_logout_session_required": 1},
    ],
)
def test_invalid_logout_metadata_is_invalid_client_metadata_and_nothing_is_saved(host, metadata):
    url, saved, _ = host
    resp = _register(url, **metadata)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_client_metadata"
    assert saved == []


def test_http_loopback_logout_uri_only_in_development_mode(host):
    url, saved, dev_mode = host
    resp = _register(
        url, redirect_uris=["http://127.0.0.1:9/cb"], backchannel_logout_uri="http://127.0.0.1:9/bc"
    )
    assert resp.status_code == (201 if dev_mode else 400), resp.text
    assert len(saved) == (1 if dev_mode else 0)
