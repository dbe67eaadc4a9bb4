"""The extension's route table: one list feeds the blueprint and the discovery document, so a
path can never be served under one URL and advertised under another."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ROUTES", "Route", "browser_paths", "endpoint_metadata"]


@dataclass(frozen=True)
class Route:
    #: The view's name (``url_for("oidc_logout.<name>")``).
    name: str
    path: str
    methods: tuple[str, ...]
    #: The Discovery 1.0 §3 / RFC 8414 §2 metadata member that advertises this route, if any.
    metadata: str | None = None
    #: Served to browsers: errors render as a page, not as JSON.
    browser: bool = False


ROUTES: tuple[Route, ...] = (
    Route("discovery", "/.well-known/openid-configuration", ("GET",)),
    Route("discovery_oauth", "/.well-known/oauth-authorization-server", ("GET",)),
    Route("jwks", "/jwks", ("GET",), "jwks_uri"),
    Route("login", "/login", ("GET", "POST"), browser=True),
    Route("logged_in", "/account", ("GET",), browser=True),
    Route("authorize", "/authorize", ("GET", "POST"), "authorization_endpoint", browser=True),
    Route("token", "/token", ("POST",), "token_endpoint"),
    Route("userinfo", "/userinfo", ("GET", "POST"), "userinfo_endpoint"),
    Route("register", "/register", ("POST",), "registration_endpoint"),
    Route("revoke", "/revoke", ("POST",), "revocation_endpoint"),
    Route("introspect", "/introspect", ("POST",), "introspection_endpoint"),
    Route("end_session", "/end_session", ("GET", "POST"), "end_session_endpoint", browser=True),
    Route("frontchannel_report", "/logout/frontchannel-report", ("POST",), browser=True),
    Route("admin_terminate", "/admin/terminations", ("POST",)),
    Route("admin_termination", "/admin/terminations/<termination_id>", ("GET",)),
    Route("admin_rotate_secret", "/admin/clients/<client_id>/rotate-secret", ("POST",)),
)


def endpoint_metadata(issuer: str) -> dict[str, str]:
    """``{metadata member: absolute URL}`` of every advertised route."""
    base = issuer.rstrip("/")
    return {r.metadata: base + r.path for r in ROUTES if r.metadata}


def browser_paths() -> tuple[str, ...]:
    """Path prefixes whose errors a browser sees."""
    return tuple(r.path.split("<", 1)[0] for r in ROUTES if r.browser)
