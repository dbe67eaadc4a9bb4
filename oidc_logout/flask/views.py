"""The OP's routes: discovery, JWKS, login, authorize, token, userinfo, registration,
revocation, introspection, end_session (+ front-channel page) and the termination admin API."""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from authlib.consts import default_json_headers
from authlib.integrations.flask_oauth2.signals import token_revoked
from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select

from ..core.grants import touch_session
from ..discovery import provider_metadata
from ..errors import InsufficientScope, InvalidClientMetadata, InvalidRequest, InvalidToken, NotFound
from ..frontchannel.page import Frame, frame_origins, iframe_url
from ..protocols import EndUser
from ..rfc7009.fastpath import try_revoke_access_token
from ..rfc7662.endpoint import INTROSPECT_SCOPE
from ..registration import client_metadata_response, create_client
from ..storage.models import OPSession, SessionParticipant, Token
from ..storage.queries import session_is_live
from ..termination import Target, by_client, by_sid, by_subject
from ..tokens import token_hash
from .extension import state
from .opsession import (
    check_csrf,
    clear_cookie,
    csrf_token,
    current_op_session,
    set_cookie,
    start_op_session,
)
from .server import request_db

log = logging.getLogger(__name__)
blueprint = Blueprint("oidc_logout", __name__, template_folder="templates")

FORM = "application/x-www-form-urlencoded"


def _provider():  # type: ignore[no-untyped-def]
    return state().provider


def _server():  # type: ignore[no-untyped-def]
    return state().server


def _no_store(resp: BaseResponse) -> BaseResponse:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def _page(template: str, status: int = 200, frame_src: list[str] | None = None, **ctx: Any) -> BaseResponse:
    nonce = secrets.token_urlsafe(16)
    resp = Response(render_template(template, csp_nonce=nonce, **ctx), status=status)
    frames = " ".join(frame_src or []) or "'none'"
    resp.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"frame-src {frames}; connect-src 'self'; base-uri 'none'; "
        "frame-ancestors 'none'")
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return _no_store(resp)


def _require_form() -> None:
    ctype = (request.mimetype or "").lower()
    if ctype != FORM:
        raise InvalidRequest("Content-Type must be application/x-www-form-urlencoded")


def _authlib_endpoint(fn) -> BaseResponse:  # type: ignore[no-untyped-def]
    """Run an Authlib endpoint in the request transaction: commit on success only, so a
    refused request changes nothing."""
    db = request_db(_provider())
    try:
        resp = fn()
    except OAuth2Error as err:
        db.rollback()
        return _no_store(_server().handle_error_response(None, err))
    if resp.status_code < 400:
        db.commit()
    else:
        db.rollback()
    return _no_store(resp)


# -- discovery and keys --------------------------------------------------------------------
@blueprint.get("/.well-known/openid-configuration")
@blueprint.get("/.well-known/oauth-authorization-server")
def discovery() -> BaseResponse:
    provider = _provider()
    iss = provider.settings.issuer.rstrip("/")
    endpoints = {
        "authorization_endpoint": f"{iss}/authorize",
        "token_endpoint": f"{iss}/token",
        "userinfo_endpoint": f"{iss}/userinfo",
        "jwks_uri": f"{iss}/jwks",
        "registration_endpoint": f"{iss}/register",
        "revocation_endpoint": f"{iss}/revoke",
        "introspection_endpoint": f"{iss}/introspect",
        "end_session_endpoint": f"{iss}/end_session",
    }
    resp = jsonify(provider_metadata(provider.settings.issuer, endpoints, provider.keyring.algs()))
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@blueprint.get("/jwks")
def jwks() -> BaseResponse:
    resp = jsonify(_provider().keyring.public_jwks())
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


# -- login and authorization ---------------------------------------------------------------
def _safe_next(value: str | None) -> str:
    """Only same-origin relative paths may be a post-login target (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return url_for("oidc_logout.logged_in")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return url_for("oidc_logout.logged_in")
    return value


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse:
    provider = _provider()
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return _page("login.html", action=url_for("oidc_logout.login"), next=next_url,
                     csrf_token=csrf_token(), error=None, username="")
    if not check_csrf():
        return _page("login.html", status=400, action=url_for("oidc_logout.login"), next=next_url,
                     csrf_token=csrf_token(), error="Your form expired; please try again.", username="")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    sub = provider.users.authenticate(username, password) if username and password and \
        len(username) < 256 and len(password) < 1024 else None
    if sub is None:
        return _page("login.html", status=401, action=url_for("oidc_logout.login"), next=next_url,
                     csrf_token=csrf_token(), error="Unknown username or wrong password.",
                     username=username[:255])
    db = request_db(provider)
    _, cookie = start_op_session(db, sub)
    db.commit()
    resp = redirect(next_url, 303)
    set_cookie(resp, provider.settings, cookie)
    return _no_store(resp)


@blueprint.get("/account")
def logged_in() -> BaseResponse:
    provider = _provider()
    row = current_op_session(request_db(provider), provider.settings)
    if row is None:
        return redirect(url_for("oidc_logout.login"))
    return _no_store(jsonify({"sub": row.subject, "session_started": row.created_at.isoformat()}))


@blueprint.get("/authorize")
def authorize() -> BaseResponse:
    provider = _provider()
    server = _server()
    db = request_db(provider)
    row = current_op_session(db, provider.settings)
    prompt = (request.args.get("prompt") or "").split()
    if row is not None and "login" in prompt:
        row = None
    user = EndUser(row.subject, row.sid, int(row.auth_time.timestamp())) if row else None
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as err:
        db.rollback()
        if err.redirect_uri:
            return _no_store(server.handle_error_response(None, err))
        return _page("error.html", status=400, error=err.error, description=err.description or "")
    if user is None:
        return redirect(url_for("oidc_logout.login", next=request.full_path))
    touch_session(db, row.sid)  # type: ignore[union-attr]
    resp = server.create_authorization_response(grant=grant, grant_user=user)
    if resp.status_code < 400:
        db.commit()
    return _no_store(resp)


@blueprint.post("/token")
def token() -> BaseResponse:
    _require_form()
    return _authlib_endpoint(lambda: _server().create_token_response())


@blueprint.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    row = _bearer_token(db)
    if "openid" not in row.scope.split() or not row.subject:
        raise InsufficientScope("the access token was not issued for openid")
    info = dict(provider.users.claims(row.subject, row.scope))
    info["sub"] = row.subject
    return _no_store(jsonify(info))


def _bearer_token(db) -> Token:  # type: ignore[no-untyped-def]
    """RFC 6750 §2.1 bearer token from the Authorization header, active and session-alive."""
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith("bearer ") or len(auth) > 4096:
        raise InvalidToken("a bearer access token is required")
    value = auth[7:].strip()
    row = db.scalar(select(Token).where(Token.token_hash == token_hash(value),
                                        Token.kind == "access_token"))
    if row is None or row.is_revoked() or row.is_expired():
        raise InvalidToken("the access token is not active")
    if row.sid and not session_is_live(db, row.sid):
        raise InvalidToken("the access token's session has ended")
    return row


# -- registration (RFC 7591) ---------------------------------------------------------------
@blueprint.post("/register")
def register() -> BaseResponse:
    provider = _provider()
    expected = provider.settings.registration_token
    if expected:
        auth = request.headers.get("Authorization", "")
        if not secrets.compare_digest(auth, f"Bearer {expected}"):
            raise InvalidToken("an initial access token is required to register (RFC 7591 §3)")
    if (request.mimetype or "") != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    metadata = request.get_json(silent=True)  # too-deep JSON: RecursionError -> 400 (errors.py)
    if not isinstance(metadata, dict):
        raise InvalidClientMetadata("the request body must be a JSON object")
    db = request_db(provider)
    # Open registration never hands out the admin or introspection scopes.
    client, secret = create_client(db, metadata, dev_mode=provider.settings.dev_mode,
                                   check_address=_address_check(provider),
                                   allow_reserved_scopes=False,
                                   reserved_scopes=(provider.settings.admin_scope, INTROSPECT_SCOPE))
    db.commit()
    resp = jsonify(client_metadata_response(client, secret))
    resp.status_code = 201
    return _no_store(resp)


def _address_check(provider):  # type: ignore[no-untyped-def]
    try:
        from .._http import DisallowedAddress, check_uri_address
    except ImportError:  # pragma: no cover
        return None
    def check(uri: str) -> None:
        try:
            check_uri_address(uri, dev_mode=provider.settings.dev_mode,
                              allowlist=provider.settings.address_allowlist)
        except DisallowedAddress as exc:
            raise InvalidClientMetadata(f"backchannel_logout_uri is not allowed: {exc}") from None

    return check


# -- revocation and introspection ----------------------------------------------------------
@blueprint.post("/revoke")
def revoke() -> BaseResponse:
    _require_form()
    # RFC 7009 §2.1/§2.2: a confidential client revoking one of its own live access tokens is
    # one UPDATE and one commit (oidc_logout/rfc7009/fastpath.py); anything else (errors
    # included) changes nothing there and is answered by the full Authlib endpoint below.
    # Authlib's token_revoked signal carries ORM objects: with a listener, always the full path.
    if not token_revoked.receivers and try_revoke_access_token(
            _provider().engine, request.headers.get("Authorization"),
            request.form.items(multi=True), bool(request.query_string)):
        return _no_store(_server().handle_response(200, {}, default_json_headers))
    return _authlib_endpoint(lambda: _server().create_endpoint_response("revocation"))


@blueprint.post("/introspect")
def introspect() -> BaseResponse:
    _require_form()
    return _authlib_endpoint(lambda: _server().create_endpoint_response("introspection"))


# -- RP-initiated logout -------------------------------------------------------------------
END_SESSION_PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state",
                      "logout_hint", "ui_locales")


@blueprint.route("/end_session", methods=["GET", "POST"])
def end_session() -> BaseResponse:
    provider = _provider()
    server = _server()
    db = request_db(provider)
    if request.method == "POST" and request.mimetype != FORM:
        raise InvalidRequest("Content-Type must be application/x-www-form-urlencoded")
    try:
        req = server.validate_endpoint_request("end_session")
    except OAuth2Error as err:
        db.rollback()
        # rpinitiated §4: on an error the OP MUST NOT redirect; nothing is terminated.
        return _page("error.html", status=400, error=err.error, description=err.description or "")
    browser = current_op_session(db, provider.settings)
    claims = req.id_token_claims
    if claims is not None and not _hint_matches_a_session(db, claims, req.client):
        # rpinitiated §2: "If the ID Token's sid claim does not correspond to the RP's current
        # session or a recent session at the OP, the OP SHOULD treat the logout request as
        # suspect" - we treat it like a request without a hint: confirm, no redirect.
        claims = None
        req.redirect_uri = None
    confirmed = request.method == "POST" and request.form.get("confirm") == "yes" and check_csrf()
    if claims is None and not confirmed:
        # rpinitiated §6: without a valid id_token_hint, ask the End-User first (a bare
        # logout link must not be a denial of service).
        params = [(k, request.values[k]) for k in END_SESSION_PARAMS if request.values.get(k)]
        client_name = req.client.row.client_name if req.client else None
        return _page("confirm_logout.html", action=url_for("oidc_logout.end_session"),
                     csrf_token=csrf_token(), params=params, client_name=client_name)
    sids: list[str] = []
    if claims is not None:
        sids.append(str(claims["sid"]))
        if browser is not None and browser.subject == claims.get("sub") and browser.sid not in sids:
            sids.append(browser.sid)
    elif browser is not None:
        sids.append(browser.sid)
    db.rollback()
    client_id = req.client.get_client_id() if req.client else None
    frames: list[Frame] = []
    termination_ids: list[str] = []
    for sid in sids:
        if db.get(OPSession, sid) is None:
            continue
        outcome = provider.terminate_now(
            by_sid(sid), reason="RP-initiated logout" if client_id else "user logout",
            initiator=f"end_session:{client_id}" if client_id else "end_session",
            browser_present=True)
        termination_ids.append(outcome.termination_id)
        frames.extend(Frame(d_id, iframe_url(uri, provider.settings.issuer, d_sid))
                      for d_id, uri, d_sid in outcome.frontchannel)
    redirect_uri = req.redirect_uri
    if not frames and redirect_uri:
        resp = redirect(redirect_uri, 302)
        clear_cookie(resp, provider.settings)
        return _no_store(resp)
    term_id = termination_ids[0] if termination_ids else ""
    timeout_ms = provider.settings.frontchannel_timeout_ms
    resp = _page("logged_out.html", frame_src=frame_origins(frames), frames=frames,
                 redirect_uri=redirect_uri, termination_id=term_id,
                 report_url=url_for("oidc_logout.frontchannel_report"),
                 report_token=_report_signer().dumps(termination_ids) if termination_ids else "",
                 timeout_ms=timeout_ms, refresh_seconds=max(1, timeout_ms // 1000 + 1))
    clear_cookie(resp, provider.settings)
    return resp


def _hint_matches_a_session(db: Any, claims: dict[str, Any], client: Any) -> bool:
    """The hint's sid names an OP session in which the hint's client took part."""
    sid = claims.get("sid")
    if not isinstance(sid, str) or not sid or client is None:
        return False
    return db.scalar(select(SessionParticipant.id).where(
        SessionParticipant.sid == sid, SessionParticipant.client_id == client.get_client_id())) is not None


def _report_signer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key or "", salt="oidc-logout-frontchannel-report")


@blueprint.post("/logout/frontchannel-report")
def frontchannel_report() -> BaseResponse:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("a JSON object is required")
    try:
        allowed = _report_signer().loads(str(body.get("token", "")))
    except BadSignature:
        raise InvalidRequest("invalid report token") from None
    loaded = body.get("loaded") or []
    if not isinstance(loaded, list) or not all(isinstance(i, int) for i in loaded) or len(loaded) > 1000:
        raise InvalidRequest("'loaded' must be a list of delivery ids")
    provider = _provider()
    db = request_db(provider)
    n = 0
    for term_id in allowed if isinstance(allowed, list) else []:
        n += provider.record_frontchannel_report(db, str(term_id), set(loaded))
    db.commit()
    return _no_store(jsonify({"recorded": n}))


# -- termination admin API -----------------------------------------------------------------
def _require_admin(db) -> Token:  # type: ignore[no-untyped-def]
    row = _bearer_token(db)
    if _provider().settings.admin_scope not in row.scope.split():
        raise InsufficientScope(f"the '{_provider().settings.admin_scope}' scope is required")
    return row


@blueprint.post("/admin/terminations")
def admin_terminate() -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    admin = _require_admin(db)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("a JSON object is required")
    named = [k for k in ("sid", "sub", "client_id") if body.get(k) is not None]
    if len(named) != 1:
        raise InvalidRequest("exactly one of 'sid', 'sub' or 'client_id' is required")
    value = body[named[0]]
    reason = body.get("reason")
    include_offline = body.get("include_offline", False)
    wait = body.get("wait", 0)
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidRequest(f"'{named[0]}' must be a non-empty string")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest("'reason' is required")
    if not isinstance(include_offline, bool):
        raise InvalidRequest("'include_offline' must be a boolean")
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 30:
        raise InvalidRequest("'wait' must be a number of seconds from 0 to 30")
    target: Target = {"sid": by_sid, "sub": by_subject, "client_id": by_client}[named[0]](value)
    db.rollback()
    outcome = provider.terminate_now(target, reason=reason.strip(),
                                     initiator=f"admin:{admin.client_id}",
                                     include_offline=include_offline, wait=float(wait))
    report = provider.termination_report(db, outcome.termination_id)
    resp = jsonify(report)
    resp.status_code = 201
    resp.headers["Location"] = url_for("oidc_logout.admin_termination", termination_id=outcome.termination_id)
    return _no_store(resp)


@blueprint.get("/admin/terminations/<termination_id>")
def admin_termination(termination_id: str) -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    _require_admin(db)
    try:
        limit = min(max(int(request.args.get("limit", 200)), 1), 1000)
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        raise InvalidRequest("'limit' and 'offset' must be integers") from None
    report = provider.termination_report(db, termination_id[:40], limit=limit, offset=offset)
    if report is None:
        raise NotFound("no termination with that id")
    return _no_store(jsonify(report))


@blueprint.post("/admin/clients/<client_id>/rotate-secret")
def admin_rotate_secret(client_id: str) -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    admin = _require_admin(db)
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise InvalidRequest("a JSON object is required")
    end_previous = body.get("end_previous", True)
    reason = body.get("reason") or "client secret rotated"
    if not isinstance(end_previous, bool) or not isinstance(reason, str):
        raise InvalidRequest("'end_previous' must be a boolean and 'reason' a string")
    db.rollback()
    secret, outcome = provider.rotate_client_secret(client_id[:64], end_previous=end_previous,
                                                    reason=reason, initiator=f"admin:{admin.client_id}")
    body_out: dict[str, Any] = {"client_id": client_id, "client_secret": secret}
    if outcome is not None:
        body_out["termination"] = provider.termination_report(db, outcome.termination_id)
    return _no_store(jsonify(body_out))


__all__ = ["blueprint"]
