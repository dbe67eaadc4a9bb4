"""The operator console: server-rendered HTML over the admin API's data (no JavaScript).

Two ways in, checked on every console request:

* the admin API's credential, an access token holding the admin scope (in extension mode a
  token the host's token endpoint issued). A browser cannot send a bearer header, so
  ``/console/login`` takes the token once in a form and keeps it in a cookie that is
  ``Secure``, ``HttpOnly``, ``SameSite=Strict`` and scoped to the console's path; every
  console request validates it again (an expired or revoked token signs the console out);
* the browser's live OP session, when its subject is one of ``console_admin_subjects``: the
  host's own login (its MFA included) signs operators in, and single logout signs them out.
  A signed-in End-User who is not listed is refused (403), not sent to another login.

Every form that changes something carries the CSRF token of Flask's signed session
(:func:`~oidc_logout.flask.opsession.check_csrf`).

Pages: recent terminations with their cause and who asked, with a search by subject or client
(``/console``); one termination with each RP's delivery and its attempts
(``/console/terminations/<id>``); deliveries by state and channel, dead letters with a
requeue button (``/console/deliveries``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from .. import audit, health
from ..core.bearer import BearerToken
from ..errors import InvalidRequest, InvalidToken, NotFound, OIDCLogoutError
from ..metrics import cause_of
from ..vocabulary import Channel, DeliveryState
from .opsession import check_csrf, csrf_token
from .server import request_db
from .state import state
from .views import _bearer, _no_store, _page, _provider, _server, view

__all__ = ["CONSOLE_COOKIE"]

#: The console's cookie: the admin access token the operator signed in with.
CONSOLE_COOKIE = "oidc_logout_console"


def _enabled() -> None:
    if not _provider().settings.console_enabled:
        raise NotFound("the operator console is disabled (OIDC_LOGOUT_CONSOLE_ENABLED)")


def _cookie_path() -> str:
    return url_for("oidc_logout.console")


def _admin_from(token: str) -> BearerToken:
    """The admin access token ``token``, validated like the admin API's bearer token."""
    return _bearer().token({"Authorization": f"Bearer {token}"}, _provider().settings.admin_scope)


def _token_admin() -> str | None:
    """The client_id of the console cookie's admin token, if it is still active."""
    value = request.cookies.get(CONSOLE_COOKIE) or ""
    if not value or len(value) > 512:
        return None
    try:
        return _admin_from(value).client_id
    except OIDCLogoutError:
        return None


def _session_subject() -> str | None:
    row = _server().current_session()
    return row.subject if row is not None else None


def _console_admin() -> str | None:
    """Who is using the console (shown on every page): an admin token's client, or a listed
    subject signed in through the browser's OP session; None: nobody allowed."""
    by_token = _token_admin()
    if by_token is not None:
        return by_token
    subject = _session_subject()
    if subject is not None and subject in _provider().settings.console_admin_subjects:
        return f"sub:{subject}"
    return None


def _to_login() -> BaseResponse:
    subject = _session_subject() if _provider().settings.console_admin_subjects else None
    if subject is not None:
        # Signed in, but not an operator: another sign-in form would not help.
        return _render(
            "login.html",
            403,
            action=url_for("oidc_logout.console_login"),
            error="Your account is not an operator of this console.",
            account_login=None,
        )
    return _no_store(redirect(url_for("oidc_logout.console_login"), 303))


def _account_login() -> str | None:
    """Where a listed operator signs in with their account (the login page returns to the
    console), when subjects are listed and the login page is known."""
    settings = _provider().settings
    if not settings.console_admin_subjects:
        return None
    if settings.login_url:
        login = settings.login_url
    elif "login" in state().route_names:
        login = url_for("oidc_logout.login")
    else:
        return None
    return login + ("&" if "?" in login else "?") + urlencode({"next": url_for("oidc_logout.console")})


def _render(template: str, status: int = 200, **ctx: Any) -> BaseResponse:
    return _page(
        f"console/{template}",
        status=status,
        csrf_token=csrf_token(),
        console_url=url_for("oidc_logout.console"),
        deliveries_url=url_for("oidc_logout.console_deliveries"),
        logout_url=url_for("oidc_logout.console_logout"),
        cause_of=cause_of,
        **ctx,
    )


@view
def console_login() -> BaseResponse:
    _enabled()
    if request.method == "GET":
        return _render(
            "login.html",
            action=url_for("oidc_logout.console_login"),
            error=None,
            account_login=_account_login(),
        )
    if not check_csrf():
        return _render(
            "login.html",
            400,
            action=url_for("oidc_logout.console_login"),
            error="Your form expired; please try again.",
            account_login=_account_login(),
        )
    token = (request.form.get("token") or "").strip()
    try:
        if not token or len(token) > 512:
            raise InvalidToken("an admin access token is required")
        _admin_from(token)
    except OIDCLogoutError:
        resp = _render(
            "login.html",
            401,
            action=url_for("oidc_logout.console_login"),
            error="That is not an active access token with the admin scope.",
            account_login=_account_login(),
        )
        # RFC 9110 §15.5.2: a 401 carries a challenge; an HTML form has no registered scheme,
        # and browsers ignore unknown ones (a Basic challenge would open a password dialog).
        resp.headers["WWW-Authenticate"] = (
            f'Form realm="oidc-logout-console", form-action="{url_for("oidc_logout.console_login")}"'
        )
        return resp
    resp = redirect(url_for("oidc_logout.console"), 303)
    resp.set_cookie(CONSOLE_COOKIE, token, httponly=True, secure=True, samesite="Strict", path=_cookie_path())
    return _no_store(resp)


@view
def console_logout() -> BaseResponse:
    _enabled()
    if not check_csrf():
        raise InvalidRequest("the form expired; reload the console")
    resp = redirect(url_for("oidc_logout.console_login"), 303)
    resp.delete_cookie(CONSOLE_COOKIE, path=_cookie_path(), httponly=True, secure=True, samesite="Strict")
    return _no_store(resp)


@view
def console() -> BaseResponse:
    _enabled()
    admin = _console_admin()
    if admin is None:
        return _to_login()
    provider = _provider()
    db = request_db(provider)
    query = audit.parse_termination_query(request.args)
    terminations = audit.list_terminations(db, query)
    dead = audit.list_deliveries(db, audit.DeliveryQuery(states=(DeliveryState.DEAD,), limit=20))
    backlog = health.outbox_backlog(db)
    return _render(
        "index.html",
        admin=admin,
        query=query,
        terminations=terminations,
        dead=dead,
        backlog=backlog,
        requeued=request.args.get("requeued", "")[:20],
        here=request.full_path if request.query_string else request.path,
    )


@view
def console_termination(termination_id: str) -> BaseResponse:
    _enabled()
    admin = _console_admin()
    if admin is None:
        return _to_login()
    provider = _provider()
    db = request_db(provider)
    report = provider.termination_report(db, termination_id[:40], limit=500)
    if report is None:
        raise NotFound("no termination with that id")
    return _render(
        "termination.html",
        admin=admin,
        term=report,
        requeued=request.args.get("requeued", "")[:20],
        here=request.path,
    )


@view
def console_deliveries() -> BaseResponse:
    _enabled()
    admin = _console_admin()
    if admin is None:
        return _to_login()
    db = request_db(_provider())
    query = audit.parse_delivery_query(request.args)
    return _render(
        "deliveries.html",
        admin=admin,
        query=query,
        states=[s.value for s in DeliveryState],
        channels=[c.value for c in Channel],
        deliveries=audit.list_deliveries(db, query),
        requeued=request.args.get("requeued", "")[:20],
        here=request.full_path if request.query_string else request.path,
    )


def _back_to(value: str | None, requeued: int) -> str:
    """Back to the console page the form was on (same-origin console paths only)."""
    base = url_for("oidc_logout.console")
    target = value if value and value.startswith(base) and "//" not in value and value.isprintable() else base
    path, _, query = target.partition("?")
    params = [p for p in query.split("&") if p and not p.startswith("requeued=")]
    params.append(urlencode({"requeued": requeued}))
    return path + "?" + "&".join(params)


@view
def console_requeue(delivery_id: int) -> BaseResponse:
    _enabled()
    if _console_admin() is None:
        return _to_login()
    if not check_csrf():
        raise InvalidRequest("the form expired; reload the console and try again")
    provider = _provider()
    db = request_db(provider)
    audit.requeue(db, [delivery_id])
    db.commit()
    if provider.dispatcher is not None:
        provider.dispatcher.kick()
    return _no_store(redirect(_back_to(request.form.get("next"), delivery_id), 303))
