"""RFC 7591 dynamic client registration with the logout metadata (Back-Channel §2.2,
Front-Channel §2, RP-Initiated §3.1), over HTTP and at the function level."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from oidc_logout.errors import InvalidClientMetadata, InvalidRedirectURI
from oidc_logout.registration import validate_metadata
from oidc_logout.storage.models import Client
from tests.support.idp import IdP, start_idp

CB = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    """One OP (dev mode) per module and database, registration explicitly opened (it is closed
    by default); each registration creates a new client."""
    server = start_idp(module_database_url, registration_open=True, registration_rate_limit=0)
    yield server
    server.stop()


def _register(idp: IdP, body: Any) -> requests.Response:
    return requests.post(f"{idp.url}/register", json=body, timeout=10)


def _client_count(idp: IdP) -> int:
    with idp.provider.session_factory() as db:
        return db.scalar(select(func.count()).select_from(Client))


def _refused(idp: IdP, body: Any, error: str) -> dict:
    before = _client_count(idp)
    resp = _register(idp, body)
    assert resp.status_code == 400, resp.text
    out = resp.json()
    assert out["error"] == error and out["error_description"]
    assert "client_id" not in out
    assert _client_count(idp) == before, "a refused registration must create no client"
    return out


# -- accepted ------------------------------------------------------------------------------
def test_valid_metadata_registers_a_confidential_client(idp):
    """RFC 7591 §3.2.1: success is 201 with client_id, client_secret and the registered metadata."""
    before = _client_count(idp)
    resp = _register(
        idp,
        {
            "redirect_uris": [CB],
            "client_name": "Shop",
            "grant_types": ["authorization_code", "refresh_token"],
            "backchannel_logout_uri": "http://127.0.0.1:9/bc?x=1",
            "backchannel_logout_session_required": True,
            "frontchannel_logout_uri": "http://127.0.0.1:9/fc",
            "post_logout_redirect_uris": ["http://127.0.0.1:9/bye"],
            "logo_uri": "https://example.org/logo.png",
        },
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["client_id"] and body["client_secret"] and body["client_secret_expires_at"] == 0
    assert isinstance(body["client_id_issued_at"], int)
    assert body["redirect_uris"] == [CB]
    assert body["backchannel_logout_uri"] == "http://127.0.0.1:9/bc?x=1"
    assert body["backchannel_logout_session_required"] is True
    assert body["frontchannel_logout_uri"] == "http://127.0.0.1:9/fc"
    assert body["frontchannel_logout_session_required"] is False
    assert body["post_logout_redirect_uris"] == ["http://127.0.0.1:9/bye"]
    assert body["logo_uri"] == "https://example.org/logo.png"
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert _client_count(idp) == before + 1
    with idp.provider.session_factory() as db:
        row = db.get(Client, body["client_id"])
        assert row is not None and row.client_secret_hash != body["client_secret"]


def test_public_client_registers_without_secret(idp):
    """RFC 7591 §2: token_endpoint_auth_method none is a public client, issued no secret."""
    resp = _register(idp, {"redirect_uris": [CB], "token_endpoint_auth_method": "none"})
    assert resp.status_code == 201
    assert "client_secret" not in resp.json()


def test_client_chosen_client_id_is_ignored(idp):
    """RFC 7591 §3.2.1: the server issues client_id; a client cannot take over an existing one."""
    first = _register(idp, {"redirect_uris": [CB]}).json()
    resp = _register(idp, {"redirect_uris": [CB], "client_id": first["client_id"]})
    assert resp.status_code == 201
    assert resp.json()["client_id"] != first["client_id"]


def test_registered_client_can_use_its_secret_at_the_token_endpoint(idp):
    """RFC 7591 §3.2.1: the issued credentials work (client_credentials grant)."""
    body = _register(
        idp, {"grant_types": ["client_credentials"], "response_types": [], "scope": "profile"}
    ).json()
    resp = requests.post(
        f"{idp.url}/token",
        data={"grant_type": "client_credentials", "scope": "profile"},
        auth=(body["client_id"], body["client_secret"]),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


# -- refused -------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["oidc_logout:admin", "openid oidc_logout:introspect"])
def test_dynamic_registration_cannot_grant_itself_operator_scopes(idp, scope):
    """RFC 7591 §5 (the server may reject requested metadata): operator-only scopes are refused."""
    _refused(
        idp,
        {"grant_types": ["client_credentials"], "response_types": [], "scope": scope},
        "invalid_client_metadata",
    )


@pytest.mark.parametrize("field", ["backchannel_logout_uri", "frontchannel_logout_uri"])
@pytest.mark.parametrize(
    "uri",
    [
        "/relative/logout",  # not absolute
        "http://127.0.0.1:9/logout#frag",  # fragment
        "http://127.0.0.1:9/logout#",  # empty fragment
        "http://rp.example.org/logout",  # http to a public host
        "ftp://127.0.0.1:9/logout",  # not http(s)
        "https://user:pw@127.0.0.1:9/logout",  # user information
        "http://127.0.0.1:99999/logout",  # bad port
        "http://127.0.0.1:9/lo\x00gout",  # control character
        "",
    ],
)
def test_bad_logout_uri_is_invalid_client_metadata(idp, field, uri):
    """Back-Channel §2.2 / Front-Channel §2: logout URIs are absolute, without fragment, https outside loopback dev."""
    _refused(idp, {"redirect_uris": [CB], field: uri}, "invalid_client_metadata")


@pytest.mark.parametrize("uri", ["/bye", "http://127.0.0.1:9/bye#x", "http://rp.example.org/bye", 42])
def test_bad_post_logout_redirect_uri_is_invalid_client_metadata(idp, uri):
    """RP-Initiated §3.1: post_logout_redirect_uris are absolute URIs without fragment (https outside dev)."""
    _refused(idp, {"redirect_uris": [CB], "post_logout_redirect_uris": [uri]}, "invalid_client_metadata")


@pytest.mark.parametrize(
    "uri", ["/cb", "http://127.0.0.1:9/cb#x", "http://rp.example.org/cb", "javascript:alert(1)"]
)
def test_bad_redirect_uri_is_invalid_redirect_uri(idp, uri):
    """RFC 7591 §3.2.2: an unacceptable redirect URI gives invalid_redirect_uri."""
    _refused(idp, {"redirect_uris": [uri]}, "invalid_redirect_uri")


def test_code_client_without_redirect_uri_is_invalid_redirect_uri(idp):
    """RFC 7591 §2: the authorization_code grant needs redirect_uris."""
    _refused(idp, {"grant_types": ["authorization_code"]}, "invalid_redirect_uri")


@pytest.mark.parametrize("fc", ["http://localhost:9/fc", "http://127.0.0.1:10/fc", "https://127.0.0.1:9/fc"])
def test_frontchannel_uri_must_share_origin_with_a_redirect_uri(idp, fc):
    """Front-Channel §2: the domain, port and scheme must equal those of a registered redirect URI."""
    _refused(idp, {"redirect_uris": [CB], "frontchannel_logout_uri": fc}, "invalid_client_metadata")


@pytest.mark.parametrize(
    "field", ["backchannel_logout_session_required", "frontchannel_logout_session_required"]
)
@pytest.mark.parametrize("value", ["true", 1, None, [True]])
def test_session_required_must_be_boolean(idp, field, value):
    """Back-Channel §2.2 / Front-Channel §2: *_session_required are booleans."""
    _refused(idp, {"redirect_uris": [CB], field: value}, "invalid_client_metadata")


@pytest.mark.parametrize(
    "body",
    [
        {"redirect_uris": [CB], "grant_types": ["password"]},
        {"redirect_uris": [CB], "grant_types": ["implicit"], "response_types": ["token"]},
        {"redirect_uris": [CB], "response_types": ["code id_token"]},
        {"grant_types": ["client_credentials"], "response_types": ["code"]},
        {"redirect_uris": [CB], "id_token_signed_response_alg": "none"},
        {"redirect_uris": [CB], "id_token_signed_response_alg": "HS256"},
        {"redirect_uris": [CB], "id_token_signed_response_alg": ["RS256"]},
        {"redirect_uris": [CB], "token_endpoint_auth_method": "private_key_jwt"},
        {"redirect_uris": [CB], "token_endpoint_auth_method": ["none"]},
        {"grant_types": ["client_credentials"], "response_types": [], "token_endpoint_auth_method": "none"},
        {"redirect_uris": [CB], "grant_types": "authorization_code"},
        {"redirect_uris": [CB], "scope": ["openid"]},
        {"redirect_uris": [CB], "scope": "openid\x00"},
        {"redirect_uris": [CB], "client_name": 5},
        {"redirect_uris": [CB], "client_name": "x" * 256},
        {"redirect_uris": [CB], "client_name": "evil\x00name"},
        {"redirect_uris": [CB], "post_logout_redirect_uris": "http://127.0.0.1:9/bye"},
        [{"redirect_uris": [CB]}],
        "just a string",
    ],
)
def test_invalid_metadata_is_invalid_client_metadata(idp, body):
    """RFC 7591 §3.2.2: unsupported grant types, alg none, wrong types give invalid_client_metadata (400)."""
    _refused(idp, body, "invalid_client_metadata")


@pytest.mark.parametrize("body", [{"redirect_uris": CB}, {"redirect_uris": [CB, 7]}])
def test_wrongly_typed_redirect_uris_are_refused(idp, body):
    """RFC 7591 §2: redirect_uris is an array of strings."""
    before = _client_count(idp)
    resp = _register(idp, body)
    assert resp.status_code == 400
    assert resp.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
    assert _client_count(idp) == before


def test_registration_requires_json(idp):
    """RFC 7591 §3.1: the request is a JSON document; a form post is invalid_request."""
    before = _client_count(idp)
    resp = requests.post(f"{idp.url}/register", data={"redirect_uris": CB}, timeout=10)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
    assert _client_count(idp) == before


def test_malformed_json_is_refused(idp):
    """RFC 7591 §3.2.2: a body that is not a JSON object is refused, never a 500."""
    before = _client_count(idp)
    resp = requests.post(
        f"{idp.url}/register",
        data=b'{"redirect_uris": [',
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_client_metadata"
    assert _client_count(idp) == before


# -- function level: production (non-dev) rules ----------------------------------------------
def _meta(**extra: Any) -> dict[str, Any]:
    return {"redirect_uris": ["https://rp.example.org/cb"], **extra}


def test_https_logout_uris_are_accepted_outside_dev_mode():
    """Back-Channel §2.2 / Front-Channel §2 / RP-Initiated §3.1: https URIs (with a query) are fine."""
    out = validate_metadata(
        _meta(
            backchannel_logout_uri="https://rp.example.org/bc?tenant=1",
            frontchannel_logout_uri="https://rp.example.org/fc",
            post_logout_redirect_uris=["https://rp.example.org/bye"],
        ),
        dev_mode=False,
    )
    assert out["backchannel_logout_uri"] == "https://rp.example.org/bc?tenant=1"
    assert out["frontchannel_logout_uri"] == "https://rp.example.org/fc"


@pytest.mark.parametrize("field", ["backchannel_logout_uri", "frontchannel_logout_uri"])
@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:9/logout",
        "http://localhost/logout",
        "http://rp.example.org/logout",
        "https://127.0.0.1/logout",
        "https://[::1]/logout",
    ],
)
def test_http_and_loopback_logout_uris_are_refused_outside_dev_mode(field, uri):
    """Back-Channel §2.2 / Front-Channel §2: outside development only https to a real host is accepted."""
    meta = _meta(**{field: uri})
    if field == "frontchannel_logout_uri":
        meta["redirect_uris"] = (
            [uri.rsplit("/", 1)[0] + "/cb"] if uri.startswith("https") else meta["redirect_uris"]
        )
    with pytest.raises((InvalidClientMetadata, InvalidRedirectURI)) as exc:
        validate_metadata(meta, dev_mode=False)
    assert exc.value.status_code == 400


def test_loopback_http_redirect_uri_is_refused_outside_dev_mode():
    """RFC 7591 §3.2.2: an http loopback redirect URI is invalid_redirect_uri in production."""
    with pytest.raises(InvalidRedirectURI):
        validate_metadata({"redirect_uris": ["http://127.0.0.1:9/cb"]}, dev_mode=False)


def test_post_logout_redirect_uri_over_http_is_refused_outside_dev_mode():
    """RP-Initiated §3.1: post_logout_redirect_uris follow the same https rule."""
    with pytest.raises(InvalidClientMetadata):
        validate_metadata(_meta(post_logout_redirect_uris=["http://rp.example.org/bye"]), dev_mode=False)


def test_loopback_http_logout_uri_is_allowed_in_dev_mode():
    """Development mode admits http to loopback hosts only (never a public host)."""
    out = validate_metadata(
        {"redirect_uris": ["http://127.0.0.1:9/cb"], "backchannel_logout_uri": "http://[::1]:9/bc"},
        dev_mode=True,
    )
    assert out["backchannel_logout_uri"] == "http://[::1]:9/bc"
    with pytest.raises(InvalidClientMetadata):
        validate_metadata(
            {"redirect_uris": ["http://127.0.0.1:9/cb"], "backchannel_logout_uri": "http://10.0.0.5/bc"},
            dev_mode=True,
        )
