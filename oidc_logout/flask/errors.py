"""One place that renders errors: OAuth-style JSON for API endpoints, a page for browsers.
No request to the extension gets a traceback page or a bare 500; errors of the host's own
routes stay the host's (the handlers are scoped to the blueprint and to the extension's paths)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from ..errors import OIDCLogoutError
from .routes import browser_paths
from .state import state

log = logging.getLogger(__name__)


def wants_html() -> bool:
    return request.path.startswith(browser_paths(state().url_prefix))


def error_response(
    error: str, description: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    if wants_html():
        nonce = secrets.token_urlsafe(12)
        resp = Response(
            render_template("oidc_logout/error.html", error=error, description=description, csp_nonce=nonce),
            status=status,
        )
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; frame-ancestors 'none'"
        )
        resp.headers["X-Frame-Options"] = "DENY"
    else:
        resp = jsonify({"error": error, "error_description": description})
        resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    # Every error, JSON too and also where no OP view ran (404/405 routing errors): never
    # sniffed, never framed.
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def _oidc_error(exc: OIDCLogoutError) -> Response:
    return error_response(exc.error, exc.description, exc.status_code, exc.headers)


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 400
    error = {404: "not_found", 405: "invalid_request", 413: "invalid_request"}.get(code, "invalid_request")
    if code == 413:
        desc = "request body too large"
    elif code == 405:
        desc = f"method {request.method} not allowed here"
    else:
        desc = exc.description or exc.name
    resp = error_response(error, desc, code if code < 500 else 400)
    if code == 405:
        # RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field in a 405
        # response containing a list of the target resource's currently supported methods."
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                resp.headers["Allow"] = value
    return resp


def _too_deep(exc: RecursionError) -> Response:
    # A JSON body nested thousands deep: a client error, not a server fault.
    return error_response("invalid_request", "the request body is nested too deeply", 400)


def _bad_data(exc: DataError) -> Response:
    # A value the database cannot store or compare (e.g. NUL on PostgreSQL): the
    # request is malformed; the session rolls back at teardown, so nothing changed.
    return error_response("invalid_request", "the request contains a value that is not allowed", 400)


def _unexpected(exc: Exception) -> Response:
    # Never a traceback to the client; the log gets the type, not request data.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response("server_error", "the server could not handle the request", 500)


_HANDLERS: tuple[tuple[type[Exception], Callable[[Any], Response]], ...] = (
    (OIDCLogoutError, _oidc_error),
    (HTTPException, _http_error),
    (RecursionError, _too_deep),
    (DataError, _bad_data),
    (Exception, _unexpected),
)


def register_blueprint_error_handlers(bp: Blueprint) -> None:
    """Our rendering for everything raised while one of the extension's views (or its
    before/after-request hooks) runs: Flask consults blueprint handlers first for those."""
    for exc_class, handler in _HANDLERS:
        bp.register_error_handler(exc_class, handler)


def register_routing_error_handlers(app: Flask, is_ours: Callable[[], bool]) -> None:
    """404 and 405 raised by routing, before any view runs (so no blueprint handler
    applies), rendered our way only when ``is_ours()`` (the path is the extension's);
    everyone else's stay the host's: the handler the host registered for that code before
    us, else the host's class-based handler (HTTPException, Exception) as Flask would pick
    it, else Flask's default page. A host handler for the code registered *after* us
    replaces this one, as the host asked."""
    for exc_class in (NotFound, MethodNotAllowed):
        code = exc_class.code
        previous = app.error_handler_spec[None][code].get(exc_class)

        def handler(exc: HTTPException, previous: Callable[[Any], Any] | None = previous) -> Any:
            if is_ours():
                return _http_error(exc)
            if previous is not None:
                return previous(exc)
            return _host_default(exc)

        app.register_error_handler(exc_class, handler)


def _host_default(exc: HTTPException) -> Any:
    handlers = current_app.error_handler_spec[None][None]
    for cls in type(exc).__mro__:
        found = handlers.get(cls)
        if found is not None:
            return found(exc)
    return exc.get_response(request.environ)


def register_app_error_handlers(app: Flask) -> None:
    """Opt-in, for an app that is nothing but the OP (the demo IdP): our rendering for every
    error of the whole app, 404s at unknown paths included. A host app never needs this."""
    for exc_class, handler in _HANDLERS:
        app.register_error_handler(exc_class, handler)


__all__ = [
    "error_response",
    "register_app_error_handlers",
    "register_blueprint_error_handlers",
    "register_routing_error_handlers",
]
