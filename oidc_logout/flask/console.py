"""The operator console: server-rendered HTML over the admin API's data (no JavaScript).

Authentication is the admin API's: an access token holding the admin scope. A browser cannot
send a bearer header, so ``/console/login`` takes the token once in a form and keeps it in a
cookie that is ``Secure``, ``HttpOnly``, ``SameSite=Strict`` and scoped to the console's path;
every console request validates it again (an expired or revoked token signs the console out).
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
from ..errors import InvalidRequest, InvalidToken, NotFound, OIDCLogoutError
from ..metrics import cause_of
from ..storage.models import Token
from ..vocabulary import Channel, DeliveryState
from .opsession import check_csrf, csrf_token
from .server import request_db
from .views import _bearer, _no_store, _page, _provider, view

__all__ = ["CONSOLE_COOKIE"]

#: The console's cookie: the admin access token the operator signed in with.
CONSOLE_COOKIE = "oidc_logout_console"


def _enabled() -> None:
    if not _provider().settings.console_enabled:
        raise NotFound("the operator console is disabled (OIDC_LOGOUT_CONSOLE_ENABLED)")


def _cookie_path() -> str:
    return url_for("oidc_logout.console")


def _admin_from(token: str) -> Token:
    """The admin access token ``token``, validated like the admin API's bearer token."""
    return _bearer().token({"Authorization": f"Bearer {token}"}, _provider().settings.admin_scope)


def _console_admin() -> Token | None:
    value = request.cookies.get(CONSOLE_COOKIE) or ""
    if not value or len(value) > 512:
        return None
    try:
        return _admin_from(value)
    except OIDCLogoutError:
        return None


def _to_login() -> BaseResponse:
    return _no_store(redirect(url_for("oidc_logout.console_login"), 303))


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
        return _render("login.html", action=url_for("oidc_logout.console_login"), error=None)
    if not check_csrf():
        return _render(
            "login.html",
            400,
            action=url_for("oidc_logout.console_login"),
            error="Your form expired; please try again.",
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
        admin=admin.client_id,
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
        admin=admin.client_id,
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
        admin=admin.client_id,
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
