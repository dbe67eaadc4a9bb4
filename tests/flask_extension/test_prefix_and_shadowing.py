"""``url_prefix``, ``serve_discovery`` and ``metadata()``, and no silent shadowing: a URL the
host already serves is an error at init_app naming both endpoints."""

from __future__ import annotations

import pytest
from flask import Flask

from oidc_logout.flask.routes import ROUTES

from .conftest import ISSUER, AddExtension


def test_routes_mount_under_the_prefix_and_discovery_advertises_them(
    host: Flask, add_extension: AddExtension
) -> None:
    ext = add_extension(host, url_prefix="/oidc/")
    assert ext.url_prefix == "/oidc"
    client = host.test_client()
    doc = client.get("/oidc/.well-known/openid-configuration").get_json()
    assert doc["issuer"] == ISSUER
    assert doc["end_session_endpoint"] == f"{ISSUER}/oidc/end_session"
    assert doc["token_endpoint"] == f"{ISSUER}/oidc/token"
    assert doc["jwks_uri"] == f"{ISSUER}/oidc/jwks"
    assert client.get("/oidc/jwks").status_code == 200
    assert client.get("/oidc/login").status_code == 200
    assert client.get("/jwks").status_code == 404
    assert client.get("/").get_data(as_text=True) == "host home"
    # The login page's 401 challenge names the prefixed form action.
    with host.test_request_context():
        from flask import url_for

        assert url_for("oidc_logout.login") == "/oidc/login"


def test_prefix_from_the_setting(host: Flask, add_extension: AddExtension) -> None:
    host.config["OIDC_LOGOUT_URL_PREFIX"] = "/idp"
    from oidc_logout.config import settings_from_mapping

    assert settings_from_mapping(dict(host.config)).url_prefix == "/idp"


def test_default_keeps_todays_urls(host: Flask, add_extension: AddExtension) -> None:
    add_extension(host)
    rules = {r.rule for r in host.url_map.iter_rules() if r.endpoint.startswith("oidc_logout.")}
    assert rules == {r.path for r in ROUTES}


def test_host_keeps_its_discovery_and_merges_ours(host: Flask, add_extension: AddExtension) -> None:
    @host.get("/.well-known/openid-configuration")
    def host_discovery() -> dict[str, object]:
        return {"issuer": ISSUER, **ext.metadata()}

    ext = add_extension(host, serve_discovery=False)
    doc = host.test_client().get("/.well-known/openid-configuration").get_json()
    assert doc["end_session_endpoint"] == f"{ISSUER}/end_session"
    assert doc["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert doc["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert doc["backchannel_logout_supported"] is True
    assert doc["frontchannel_logout_supported"] is True
    assert "token_endpoint" not in doc  # only the logout side is merged


def test_a_url_the_host_serves_is_an_error_naming_both(host: Flask, add_extension: AddExtension) -> None:
    @host.get("/.well-known/openid-configuration")
    def host_discovery() -> str:
        return "{}"

    @host.post("/admin/terminations/<int:n>")
    def host_admin(n: int) -> str:
        return ""

    with pytest.raises(RuntimeError) as info:
        add_extension(host)
    message = str(info.value)
    assert "'host_discovery' and oidc_logout.discovery" in message
    assert "/.well-known/openid-configuration" in message
    # Same shape, other methods (ours is GET): no collision.
    assert "host_admin" not in message
    assert "oidc_logout" not in host.extensions


def test_overlapping_methods_on_a_variable_path_collide(host: Flask, add_extension: AddExtension) -> None:
    @host.get("/admin/terminations/<int:n>")
    def host_admin(n: int) -> str:
        return ""

    with pytest.raises(RuntimeError, match=r"'host_admin' and oidc_logout\.admin_termination"):
        add_extension(host)


def test_a_prefix_resolves_the_collision(host: Flask, add_extension: AddExtension) -> None:
    @host.get("/login")
    def host_login() -> str:
        return "host login"

    add_extension(host, url_prefix="/oidc")
    client = host.test_client()
    assert client.get("/login").get_data(as_text=True) == "host login"
    assert client.get("/oidc/login").status_code == 200
