"""One place that renders errors: OAuth-style JSON for API endpoints, a page for browsers.
No request gets a traceback page or a bare 500."""

from __future__ import annotations

import logging
import secrets

from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

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


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(OIDCLogoutError)
    def _oidc_error(exc: OIDCLogoutError) -> Response:
        return error_response(exc.error, exc.description, exc.status_code, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 400
        error = {404: "not_found", 405: "invalid_request", 413: "invalid_request"}.get(
            code, "invalid_request"
        )
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

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # A JSON body nested thousands deep: a client error, not a server fault.
        return error_response("invalid_request", "the request body is nested too deeply", 400)

    @app.errorhandler(DataError)
    def _bad_data(exc: DataError) -> Response:
        # A value the database cannot store or compare (e.g. NUL on PostgreSQL): the
        # request is malformed; the session rolls back at teardown, so nothing changed.
        return error_response("invalid_request", "the request contains a value that is not allowed", 400)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Never a traceback to the client; the log gets the type, not request data.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("server_error", "the server could not handle the request", 500)
