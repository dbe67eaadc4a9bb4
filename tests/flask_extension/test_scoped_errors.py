"""Nothing app-wide changes unless asked: the extension's error rendering and request-body
limit apply to its own routes; the host's 404s, its own error handlers and its body limit
stay the host's. Templates are overridden on purpose, never by accident."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from .conftest import AddExtension, new_host

BIG = b"x" * (64 * 1024 + 1)


def test_a_host_404_stays_the_hosts(host: Flask, add_extension: AddExtension) -> None:
    add_extension(host)
    resp = host.test_client().get("/no-such-page")
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"  # Flask's own page, not OAuth JSON
    assert "not_found" not in resp.get_data(as_text=True)


def test_a_hosts_own_404_handler_stays_in_charge(host: Flask, add_extension: AddExtension) -> None:
    @host.errorhandler(404)
    def host_404(exc: Exception) -> tuple[str, int]:
        return "host 404", 404

    add_extension(host, url_prefix="/oidc")
    client = host.test_client()
    assert client.get("/no-such-page").get_data(as_text=True) == "host 404"
    # Under our prefix, ours.
    resp = client.get("/oidc/no-such-endpoint")
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"


def test_a_hosts_class_based_handler_is_still_found(host: Flask, add_extension: AddExtension) -> None:
    from werkzeug.exceptions import HTTPException

    @host.errorhandler(HTTPException)
    def host_http(exc: HTTPException) -> tuple[str, int]:
        return f"host {exc.code}", exc.code or 500

    add_extension(host)
    client = host.test_client()
    assert client.get("/no-such-page").get_data(as_text=True) == "host 404"
    assert client.get("/upload").get_data(as_text=True) == "host 405"
    # A 405 on one of our paths is ours, with its Allow header.
    resp = client.delete("/token")
    assert resp.status_code == 405 and resp.get_json()["error"] == "invalid_request"
    assert "POST" in resp.headers["Allow"]


def test_a_hosts_500_handler_stays_the_hosts(host: Flask, add_extension: AddExtension) -> None:
    @host.get("/boom")
    def boom() -> str:
        raise ValueError("host bug")

    @host.errorhandler(500)
    def host_500(exc: Exception) -> tuple[str, int]:
        return "host 500", 500

    add_extension(host)
    resp = host.test_client().get("/boom")
    assert resp.status_code == 500 and resp.get_data(as_text=True) == "host 500"


def test_body_limit_is_ours_only(host: Flask, add_extension: AddExtension) -> None:
    add_extension(host)
    assert host.config["MAX_CONTENT_LENGTH"] is None  # never touched
    client = host.test_client()
    # The host's own route still takes a body above our limit ...
    resp = client.post("/upload", data=BIG, content_type="application/octet-stream")
    assert resp.status_code == 200 and resp.get_data(as_text=True) == str(len(BIG))
    # ... ours answers 413, OAuth-style.
    resp = client.post("/token", data={"grant_type": "x" * len(BIG)})
    assert resp.status_code == 413
    assert resp.get_json() == {"error": "invalid_request", "error_description": "request body too large"}


def test_the_hosts_own_limit_is_left_as_set(add_extension: AddExtension) -> None:
    host = new_host()
    host.config["MAX_CONTENT_LENGTH"] = 10
    add_extension(host)
    assert host.config["MAX_CONTENT_LENGTH"] == 10
    assert host.test_client().post("/upload", data=b"x" * 11).status_code == 413


def test_errors_in_our_views_are_rendered_ours(host: Flask, add_extension: AddExtension) -> None:
    add_extension(host, url_prefix="/oidc")
    resp = host.test_client().post("/oidc/token", data={"grant_type": "password"})
    assert resp.status_code in (400, 401) and "error" in resp.get_json()


def _host_with_templates(tmp_path: Path, relative: str) -> Flask:
    page = tmp_path / "templates" / relative
    page.parent.mkdir(parents=True)
    page.write_text("HOST LOGIN PAGE")
    return new_host(template_folder=str(tmp_path / "templates"))


def test_a_host_login_template_does_not_replace_ours(tmp_path: Path, add_extension: AddExtension) -> None:
    host = _host_with_templates(tmp_path, "login.html")
    add_extension(host)
    body = host.test_client().get("/login").get_data(as_text=True)
    assert "HOST LOGIN PAGE" not in body and "csrf_token" in body


def test_a_host_overrides_our_template_on_purpose(tmp_path: Path, add_extension: AddExtension) -> None:
    host = _host_with_templates(tmp_path, "oidc_logout/login.html")
    add_extension(host)
    assert host.test_client().get("/login").get_data(as_text=True) == "HOST LOGIN PAGE"
