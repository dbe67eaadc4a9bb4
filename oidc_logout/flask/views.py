"""The OP's routes: discovery, JWKS, login, authorize, token, userinfo, registration,
revocation, introspection, end_session (+ front-channel page) and the termination admin API."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from authlib.consts import default_json_headers
from authlib.integrations.flask_oauth2.signals import token_revoked
from authlib.oauth2 import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError
from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response as BaseResponse

from .. import metrics, throttle
from .._http import DisallowedAddress, check_uri_address
from ..admin import parse_rotate_secret, parse_termination
from ..core.bearer import BearerProtector, BearerToken
from ..core.consent import (
    OFFLINE_ACCESS,
    Decision,
    decide,
    needs_login,
    requested_scopes,
    without_prompt_login,
)
from ..core.grants import touch_session
from ..discovery import provider_metadata
from ..errors import (
    InsufficientScope,
    InvalidClientMetadata,
    InvalidRequest,
    NotFound,
    TooManyRequests,
)
from ..frontchannel.page import frame_origins
from ..protocols import EndUser
from ..provider import Provider
from ..registration import check_registration_allowed, client_metadata_response, create_client
from ..rfc7009.fastpath import DECLINED as FAST_PATH_DECLINED
from ..rfc7009.fastpath import try_revoke_access_token
from ..rfc7662.endpoint import INTROSPECT_SCOPE
from ..rpinitiated.end_session import PARAMETERS as END_SESSION_PARAMS
from ..rpinitiated.end_session import LogoutRequest
from ..ssf.streams import reserved_scopes as ssf_reserved_scopes
from ..storage.consent import approved_scopes, remember_consent
from ..storage.models import Token
from ..throttle import login_limits, registration_limits
from .errors import register_blueprint_error_handlers
from .host import is_host_mode, prepare_host_target
from .opsession import (
    check_csrf,
    clear_cookie,
    csrf_token,
    current_op_session,
)
from .routes import ROUTES, Route, endpoint_metadata
from .server import request_db
from .signin import sign_in
from .state import state

log = logging.getLogger(__name__)
#: The blueprint's name: endpoints are ``oidc_logout.<route name>``.
BLUEPRINT_NAME = "oidc_logout"

FORM = "application/x-www-form-urlencoded"
_VIEWS: dict[str, Callable[..., BaseResponse]] = {}


def view(fn: Callable[..., BaseResponse]) -> Callable[..., BaseResponse]:
    """Register ``fn`` as the view of the route table entry of the same name."""
    _VIEWS[fn.__name__] = fn
    return fn


def _provider() -> Provider:
    return state().provider


def _server() -> Any:  # OPServer (turnkey) or HostContext (extension mode)
    return state().server


def _bearer() -> BearerProtector:
    bearer = state().bearer
    assert bearer is not None  # built by init_app
    return bearer


def _no_store(resp: BaseResponse) -> BaseResponse:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def _page(template: str, status: int = 200, frame_src: list[str] | None = None, **ctx: Any) -> BaseResponse:
    nonce = secrets.token_urlsafe(16)
    resp = Response(render_template(f"oidc_logout/{template}", csp_nonce=nonce, **ctx), status=status)
    frames = " ".join(frame_src or []) or "'none'"
    resp.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"frame-src {frames}; connect-src 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return _no_store(resp)


def _require_form() -> None:
    ctype = (request.mimetype or "").lower()
    if ctype != FORM:
        raise InvalidRequest("Content-Type must be application/x-www-form-urlencoded")


def _authlib_endpoint(fn: Callable[[], BaseResponse]) -> BaseResponse:
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
@view
def discovery() -> BaseResponse:
    provider = _provider()
    ext = state()
    served = [r for r in ROUTES if r.name in ext.route_names]
    endpoints = endpoint_metadata(provider.settings.issuer, ext.url_prefix, served)
    resp = jsonify(provider_metadata(provider.settings.issuer, endpoints, provider.keyring.algs()))
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@view
def discovery_oauth() -> BaseResponse:
    return discovery()


@view
def jwks() -> BaseResponse:
    resp = jsonify(_provider().keyring.public_jwks())
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


# -- login and authorization ---------------------------------------------------------------
def _safe_next(value: str | None) -> str:
    """Only same-origin relative paths may be a post-login target (no open redirect, RFC 9700
    §4.11). Control characters (CR/LF: header injection, refused by werkzeug with a 500) and
    anything over 4 KiB are refused too."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or not value.isprintable()
        or len(value) > 4096
    ):
        return url_for("oidc_logout.logged_in")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return url_for("oidc_logout.logged_in")
    return value


#: RFC 9110 §15.5.2: "The server generating a 401 response MUST send a WWW-Authenticate
#: header field containing at least one challenge applicable to the target resource." HTML
#: form sign-in has no registered scheme; browsers ignore unknown schemes (no dialog).
def login_challenge() -> str:
    return f'Form realm="oidc-logout", form-action="{url_for("oidc_logout.login")}"'


def _login_page(
    status: int = 200, error: str | None = None, username: str = "", next_url: str | None = None
) -> BaseResponse:
    resp = _page(
        "login.html",
        status=status,
        action=url_for("oidc_logout.login"),
        next=next_url or _safe_next(request.values.get("next")),
        csrf_token=csrf_token(),
        error=error,
        username=username[:255],
    )
    if status == 401:
        resp.headers["WWW-Authenticate"] = login_challenge()
    return resp


@view
def login() -> BaseResponse:
    provider = _provider()
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return _login_page(next_url=next_url)
    if not check_csrf():
        return _login_page(400, "Your form expired; please try again.", next_url=next_url)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    db = request_db(provider)
    limits = login_limits(provider.settings, username, request.remote_addr)
    if retry_after := throttle.exceeded(db, limits):
        # Throttled: answered before the password is even looked at, so guessing on gains
        # nothing (the attempt is not counted either: a locked-out user is not kept out longer).
        resp = _login_page(
            429,
            "Too many failed sign-ins; please wait and try again later.",
            username=username,
            next_url=next_url,
        )
        resp.headers["Retry-After"] = str(retry_after)
        return resp
    sub = (
        provider.users.authenticate(username, password)
        if username and password and len(username) < 256 and len(password) < 1024
        else None
    )
    if sub is None:
        throttle.record(db, limits)
        db.commit()
        return _login_page(401, "Unknown username or wrong password.", username=username, next_url=next_url)
    throttle.reset(db, [lim for lim in limits if lim.key.startswith("login:account:")])
    resp = redirect(next_url, 303)  # built before the commit: nothing can fail after it
    # RFC 8176 §2: "pwd" - the bundled form checks a password and nothing else. sign_in
    # commits the request transaction (the throttle reset with it).
    sign_in(resp, provider, sub, amr=["pwd"])
    return _no_store(resp)


@view
def logged_in() -> BaseResponse:
    provider = _provider()
    row = current_op_session(request_db(provider), provider.settings)
    if row is None:
        return redirect(url_for("oidc_logout.login"))
    return _no_store(jsonify({"sub": row.subject, "session_started": row.created_at.isoformat()}))


#: The authorization request parameters the consent page carries back (Core 1.0 §3.1.2.1).
AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "ui_locales",
    "login_hint",
    "acr_values",
    "response_mode",
    "display",
    "claims_locales",
)
#: The consent page's decision field: "allow" or "deny".
CONSENT_FIELD = "consent"


def _login_url(provider: Provider, next_url: str) -> str:
    """Where an End-User without a session signs in: the host's own login page
    (``OIDC_LOGOUT_LOGIN_URL``, which calls ``OIDCLogout.sign_in`` and returns to ``next``) or
    the bundled form."""
    login = provider.settings.login_url or url_for("oidc_logout.login")
    return login + ("&" if "?" in login else "?") + urlencode({"next": next_url})


def _authorize_params() -> list[tuple[str, str]]:
    return [(k, request.values[k]) for k in AUTHORIZE_PARAMS if request.values.get(k)]


def _consent_page(grant: Any, status: int = 200, error: str | None = None) -> BaseResponse:
    scopes = sorted(requested_scopes(grant.request.payload.scope))
    client = grant.request.client
    return _page(
        "consent.html",
        status=status,
        action=url_for("oidc_logout.authorize"),
        csrf_token=csrf_token(),
        params=_authorize_params(),
        scopes=scopes,
        offline=OFFLINE_ACCESS in scopes,
        field=CONSENT_FIELD,
        client_name=client.row.client_name or client.get_client_id(),
        trusted=bool(client.row.trusted),
        error=error,
    )


@view
def authorize() -> BaseResponse:
    """Core 1.0 §3.1.2: GET and POST (the consent page posts back here). The consent decision
    is :func:`oidc_logout.core.consent.decide`; this view adapts and renders it."""
    provider = _provider()
    server = _server()
    db = request_db(provider)
    row = current_op_session(db, provider.settings)
    prompt = (request.values.get("prompt") or "").split()
    answer = request.form.get(CONSENT_FIELD) if request.method == "POST" else None
    if needs_login(prompt, signed_in=row is not None, deciding_consent=answer is not None):
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
        params = without_prompt_login(_authorize_params())
        target = url_for("oidc_logout.authorize") + "?" + urlencode(params)
        return redirect(_login_url(provider, target))
    client = grant.request.client
    if answer is not None and not check_csrf():
        # A decision without this browser's CSRF token is no decision (cross-site POST).
        return _consent_page(grant, status=400, error="Your form expired; please decide again.")
    if answer == "deny":
        # RFC 6749 §4.1.2.1: "access_denied - The resource owner or authorization server
        # denied the request", redirected to the validated redirect_uri.
        return _no_store(server.create_authorization_response(grant=grant, grant_user=None))
    requested = requested_scopes(grant.request.payload.scope)
    decision = decide(
        trusted=bool(client.row.trusted),
        prompt=prompt,
        requested=requested,
        approved=approved_scopes(db, user.sub, client.get_client_id()),
        approving=answer == "allow",
    )
    if decision is Decision.CONSENT_REQUIRED:
        return _no_store(
            server.handle_error_response(
                None,
                ConsentRequiredError(
                    description="the End-User has not consented to this client and scope",
                    redirect_uri=grant.redirect_uri,
                    state=request.values.get("state"),
                ),
            )
        )
    if decision is Decision.ASK:
        return _consent_page(grant)
    if answer == "allow":
        remember_consent(db, user.sub, client.get_client_id(), requested)
    assert row is not None  # a signed-in End-User
    touch_session(db, row.sid)
    resp = server.create_authorization_response(grant=grant, grant_user=user)
    if resp.status_code < 400 and "code=" in (resp.headers.get("Location") or ""):
        db.commit()
    else:
        db.rollback()
    return _no_store(resp)


@view
def token() -> BaseResponse:
    _require_form()
    return _authlib_endpoint(lambda: _server().create_token_response())


@view
def userinfo() -> BaseResponse:
    provider = _provider()
    row = _bearer().token(request.headers)
    assert isinstance(row, Token)  # userinfo is served in turnkey mode only (the host's own)
    if "openid" not in row.scope.split() or not row.subject:
        raise InsufficientScope(
            "the access token was not issued for openid",
            challenge='Bearer error="insufficient_scope", scope="openid"',
        )
    info = dict(provider.users.claims(row.subject, row.scope))
    info["sub"] = row.subject
    return _no_store(jsonify(info))


# -- registration (RFC 7591) ---------------------------------------------------------------
@view
def register() -> BaseResponse:
    provider = _provider()
    settings = provider.settings
    check_registration_allowed(settings, request.headers.get("Authorization"))
    if (request.mimetype or "") != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    metadata = request.get_json(silent=True)  # too-deep JSON: RecursionError -> 400 (errors.py)
    if not isinstance(metadata, dict):
        raise InvalidClientMetadata("the request body must be a JSON object")
    db = request_db(provider)
    limits = registration_limits(settings, request.remote_addr)
    if retry_after := throttle.exceeded(db, limits):
        raise TooManyRequests(
            "too many client registrations from this address; try again later", retry_after=retry_after
        )
    # Registration never hands out the admin or introspection scopes, and a client that
    # registered itself is never trusted: its users are asked for consent (core/consent.py).
    client, secret = create_client(
        db,
        metadata,
        dev_mode=settings.dev_mode,
        check_address=_address_check(provider),
        allow_reserved_scopes=False,
        trusted=False,
        reserved_scopes=(settings.admin_scope, INTROSPECT_SCOPE, *ssf_reserved_scopes(settings)),
    )
    throttle.record(db, limits)  # only registrations that succeed count (a refusal changes nothing)
    db.commit()
    resp = jsonify(client_metadata_response(client, secret))
    resp.status_code = 201
    return _no_store(resp)


def _address_check(provider: Provider) -> Callable[[str], None]:
    """RFC 9700 §4.16 (SSRF): a back-channel logout URI must pass the address policy."""

    def check(uri: str) -> None:
        try:
            check_uri_address(
                uri, dev_mode=provider.settings.dev_mode, allowlist=provider.settings.address_allowlist
            )
        except DisallowedAddress as exc:
            raise InvalidClientMetadata(f"backchannel_logout_uri is not allowed: {exc}") from None

    return check


# -- revocation and introspection ----------------------------------------------------------
@view
def revoke() -> BaseResponse:
    _require_form()
    # RFC 7009 §2.1/§2.2: a confidential client revoking one of its own live access tokens is
    # one UPDATE and one commit (oidc_logout/rfc7009/fastpath.py); anything else (errors
    # included) changes nothing there and is answered by the full Authlib endpoint below.
    # Authlib's token_revoked signal carries ORM objects: with a listener, always the full path.
    # Behind the opt-in WSGI fast path (flask/fastpath.py) a declined request skips it here.
    if (
        not token_revoked.receivers
        and not request.environ.get(FAST_PATH_DECLINED)
        and try_revoke_access_token(
            _provider().engine,
            request.headers.get("Authorization"),
            request.form.items(multi=True),
            bool(request.query_string),
        )
    ):
        metrics.revoked("access_token")
        return _no_store(_server().handle_response(200, {}, default_json_headers))
    return _authlib_endpoint(lambda: _server().create_endpoint_response("revocation"))


@view
def introspect() -> BaseResponse:
    _require_form()
    return _authlib_endpoint(lambda: _server().create_endpoint_response("introspection"))


# -- RP-initiated logout -------------------------------------------------------------------
@view
def end_session() -> BaseResponse:
    """rpinitiated §2-§6 run in :mod:`oidc_logout.rpinitiated.end_session`; here the request
    is adapted (form, CSRF-checked confirmation) and the result rendered."""
    provider = _provider()
    server = _server()
    if request.method == "POST" and request.mimetype != FORM:
        raise InvalidRequest("Content-Type must be application/x-www-form-urlencoded")
    try:
        req: LogoutRequest = server.validate_endpoint_request("end_session")
    except OAuth2Error as err:
        request_db(provider).rollback()
        # rpinitiated §4: on an error the OP MUST NOT redirect; nothing is terminated.
        return _page("error.html", status=400, error=err.error, description=err.description or "")
    req.confirmed = request.method == "POST" and request.form.get("confirm") == "yes" and check_csrf()
    if req.needs_confirmation and not req.confirmed:
        params = [(k, request.values[k]) for k in END_SESSION_PARAMS if request.values.get(k)]
        client_name = req.client.row.client_name if req.client else None
        return _page(
            "confirm_logout.html",
            action=url_for("oidc_logout.end_session"),
            csrf_token=csrf_token(),
            params=params,
            client_name=client_name,
        )
    resp = server.create_endpoint_response("end_session", req)
    result = req.result
    assert result is not None  # end_session() always leaves one
    if resp is None:
        timeout_ms = provider.settings.frontchannel_timeout_ms
        term_ids = [result.termination_id] if result.termination_id else []
        resp = _page(
            "logged_out.html",
            frame_src=frame_origins(list(result.frames)),
            frames=list(result.frames),
            redirect_uri=result.redirect_uri,
            termination_id=result.termination_id or "",
            report_url=url_for("oidc_logout.frontchannel_report"),
            report_token=_report_signer().dumps(term_ids) if term_ids else "",
            timeout_ms=timeout_ms,
            refresh_seconds=max(1, timeout_ms // 1000 + 1),
        )
    if result.browser_session_ended:
        # Only the browser's own session ending clears its cookie (a hint naming another
        # user's session must not sign this browser out of a session that lives on).
        clear_cookie(resp, provider.settings)
    return _no_store(resp)


def _report_signer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key or "", salt="oidc-logout-frontchannel-report")


@view
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
def _require_admin() -> BearerToken:
    return _bearer().token(request.headers, _provider().settings.admin_scope)


@view
def admin_terminate() -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    admin = _require_admin()
    ask = parse_termination(request.get_json(silent=True))
    if is_host_mode():
        prepare_host_target(db, ask.target)  # the host's clients
        db.commit()
    db.rollback()
    outcome = provider.terminate_now(
        ask.target,
        reason=ask.reason,
        initiator=f"admin:{admin.client_id}",
        include_offline=ask.include_offline,
        wait=ask.wait,
    )
    report = provider.termination_report(db, outcome.termination_id)
    resp = jsonify(report)
    resp.status_code = 201
    resp.headers["Location"] = url_for("oidc_logout.admin_termination", termination_id=outcome.termination_id)
    return _no_store(resp)


@view
def admin_termination(termination_id: str) -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    _require_admin()
    try:
        limit = min(max(int(request.args.get("limit", 200)), 1), 1000)
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        raise InvalidRequest("'limit' and 'offset' must be integers") from None
    report = provider.termination_report(db, termination_id[:40], limit=limit, offset=offset)
    if report is None:
        raise NotFound("no termination with that id")
    return _no_store(jsonify(report))


@view
def admin_rotate_secret(client_id: str) -> BaseResponse:
    provider = _provider()
    db = request_db(provider)
    admin = _require_admin()
    if is_host_mode():
        # The shadow row of a host client holds no secret: the host's server authenticates
        # its clients, so a secret rotated here would never be checked.
        raise InvalidRequest(
            "client secrets are the host's in extension mode: rotate the secret at the host, "
            "then terminate by 'client_id' to end what the old secret obtained"
        )
    ask = parse_rotate_secret(request.get_json(silent=True))
    db.rollback()
    secret, outcome = provider.rotate_client_secret(
        client_id[:64], end_previous=ask.end_previous, reason=ask.reason, initiator=f"admin:{admin.client_id}"
    )
    body_out: dict[str, Any] = {"client_id": client_id, "client_secret": secret}
    if outcome is not None:
        body_out["termination"] = provider.termination_report(db, outcome.termination_id)
    return _no_store(jsonify(body_out))


def _limit_request_body() -> None:
    """``Settings.max_request_bytes`` on the extension's routes only (Flask >= 3.1 reads the
    limit per request): a larger body is a 413 rendered by our handlers, while the host's
    routes keep ``MAX_CONTENT_LENGTH``, which we never touch."""
    request.max_content_length = _provider().settings.max_request_bytes


def _security_headers(resp: BaseResponse) -> BaseResponse:
    """Every OP response, success or error: no MIME sniffing (a JSON body or a reflected
    value is never run as HTML or script), and no framing (clickjacking of the login and
    consent pages; RFC 9700 §4.16)."""
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers.setdefault("X-Frame-Options", "DENY")
    if resp.status_code == 401 and "WWW-Authenticate" not in resp.headers:
        # RFC 6749 §5.2 / RFC 9110 §15.5.2: a 401 always carries a challenge.
        resp.headers["WWW-Authenticate"] = (
            login_challenge() if request.endpoint == "oidc_logout.login" else 'Basic realm="oidc-logout"'
        )
    return resp


def make_blueprint(routes: Sequence[Route] = ROUTES) -> Blueprint:
    """A blueprint serving ``routes`` (one per app: which routes, and where, is per app).

    Templates: ``template_folder`` makes ours the *last* resort of Flask's loader (the app's
    own ``templates/`` folder comes first), and every template of ours is named
    ``oidc_logout/<name>.html``, so a host's ``templates/login.html`` never replaces one of
    ours by accident while a host ``templates/oidc_logout/login.html`` does, on purpose."""
    from . import admin_views, console  # noqa: F401 - their @view functions join _VIEWS

    bp = Blueprint(BLUEPRINT_NAME, __name__, template_folder="templates")
    bp.before_request(_limit_request_body)
    bp.after_request(_security_headers)
    register_blueprint_error_handlers(bp)
    for route in routes:
        bp.add_url_rule(route.path, route.name, _VIEWS[route.name], methods=list(route.methods))
    return bp


__all__ = ["BLUEPRINT_NAME", "make_blueprint"]

from . import ssf_views  # noqa: E402,F401  (registers the SSF and Global Token Revocation views)
