"""The extension's route table: one list feeds the blueprint and the discovery document, so a
path can never be served under one URL and advertised under another."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DISCOVERY_ROUTES",
    "ROUTES",
    "Route",
    "browser_paths",
    "endpoint_metadata",
    "normalize_prefix",
    "served_routes",
]


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
    # Shared Signals Framework 1.0 transmitter (flask/ssf_views.py) and Global Token Revocation
    Route("ssf_configuration", "/.well-known/ssf-configuration", ("GET",)),
    Route("ssf_stream", "/ssf/stream", ("GET", "POST", "PATCH", "PUT", "DELETE")),
    Route("ssf_status", "/ssf/status", ("GET", "POST")),
    Route("ssf_subject_add", "/ssf/subjects:add", ("POST",)),
    Route("ssf_subject_remove", "/ssf/subjects:remove", ("POST",)),
    Route("ssf_verify", "/ssf/verify", ("POST",)),
    Route("ssf_poll", "/ssf/poll/<stream_id>", ("POST",)),
    Route("gtr", "/global-token-revocation", ("POST",), "global_token_revocation_endpoint"),
    # Monitoring, admin list/search and the operator console (flask/admin_views.py, console.py)
    Route("metrics_endpoint", "/metrics", ("GET",)),
    Route("healthz", "/healthz", ("GET",)),
    Route("readyz", "/readyz", ("GET",)),
    Route("admin_terminations", "/admin/terminations", ("GET",)),
    Route("admin_deliveries", "/admin/deliveries", ("GET",)),
    Route("admin_requeue", "/admin/deliveries/<int:delivery_id>/retry", ("POST",)),
    Route("admin_openapi_document", "/admin/openapi.json", ("GET",)),
    Route("console", "/console", ("GET",), browser=True),
    Route("console_login", "/console/login", ("GET", "POST"), browser=True),
    Route("console_logout", "/console/logout", ("POST",), browser=True),
    Route("console_termination", "/console/terminations/<termination_id>", ("GET",), browser=True),
    Route("console_deliveries", "/console/deliveries", ("GET",), browser=True),
    Route("console_requeue", "/console/deliveries/<int:delivery_id>/requeue", ("POST",), browser=True),
)


#: The discovery documents: left out when the host serves its own (``serve_discovery=False``).
DISCOVERY_ROUTES = frozenset({"discovery", "discovery_oauth"})


def normalize_prefix(prefix: str) -> str:
    """``""`` (served at the root) or ``"/a/b"``: one leading slash, no trailing slash."""
    prefix = prefix.strip().strip("/")
    if not prefix:
        return ""
    if any(c in prefix for c in "<>?#") or "//" in prefix:
        raise ValueError(f"url_prefix {prefix!r}: a plain path such as '/oidc' is expected")
    return "/" + prefix


def served_routes(*, serve_discovery: bool = True) -> tuple[Route, ...]:
    """The routes the blueprint registers."""
    return tuple(r for r in ROUTES if serve_discovery or r.name not in DISCOVERY_ROUTES)


def endpoint_metadata(issuer: str, prefix: str = "", routes: Iterable[Route] = ROUTES) -> dict[str, str]:
    """``{metadata member: absolute URL}`` of every advertised route, under ``prefix``."""
    base = issuer.rstrip("/") + normalize_prefix(prefix)
    return {r.metadata: base + r.path for r in routes if r.metadata}


def browser_paths(prefix: str = "") -> tuple[str, ...]:
    """Path prefixes whose errors a browser sees."""
    prefix = normalize_prefix(prefix)
    return tuple(prefix + r.path.split("<", 1)[0] for r in ROUTES if r.browser)
