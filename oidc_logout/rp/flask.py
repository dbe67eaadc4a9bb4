"""Flask integration: server-side sessions plus back- and front-channel logout endpoints.

Usage::

    rp = RPLogout(app, validator=validator, session_index=index, session_store=store)
    # after the OIDC callback validated the ID token:
    rp.register_login(sub=id_token["sub"], sid=id_token.get("sid"))

The back-channel endpoint is always mounted; the front-channel endpoint only with
``frontchannel=True`` (register ``frontchannel_logout_uri`` for it), and by default it then
requires ``iss`` and ``sid`` (``frontchannel_logout_session_required``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request, session
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from .receiver import BackchannelLogoutReceiver, handle_backchannel_request
from .sessions import RenewableSessionIndex, SessionIndex, SessionStore
from .validation import LogoutTokenValidator

__all__ = ["RPLogout", "ServerSession", "ServerSideSessionInterface"]

EXTENSION_KEY = "oidc_logout_rp"
_SID_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


def _new_id() -> str:
    return secrets.token_urlsafe(32)


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """Session whose data lives in a :class:`SessionStore`; the cookie holds only ``sid``."""

    def __init__(
        self, initial: dict[str, Any] | None = None, sid: str | None = None, new: bool = False
    ) -> None:
        def on_update(self: ServerSession) -> None:
            self.modified = True

        super().__init__(initial, on_update)
        self.sid = sid or _new_id()
        self.new = new
        self.modified = False
        self.rotated_from: str | None = None

    def regenerate(self) -> None:
        """Give the session a fresh id (call at login against session fixation)."""
        if not self.new and self.rotated_from is None:
            self.rotated_from = self.sid
        self.sid = _new_id()
        self.new = True
        self.modified = True


class ServerSideSessionInterface(SessionInterface):
    """Flask session interface backed by a :class:`SessionStore`.

    Logging out deletes the data on the server, so a stolen or replayed cookie is useless
    afterwards. A request that loaded a session which is deleted meanwhile (back-channel
    logout racing a request) does not resurrect it: updates use ``must_exist=True``.
    """

    def __init__(
        self, store: SessionStore, ttl: float | None = None, index: SessionIndex | None = None
    ) -> None:
        self.store = store
        self.ttl = ttl
        #: Renewed together with the session (see :class:`RenewableSessionIndex`).
        self.index = index

    def open_session(self, app: Flask, request: Any) -> ServerSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if sid and _SID_RE.match(sid):
            data = self.store.load(sid)
            if data is not None:
                return ServerSession(data, sid=sid)
        return ServerSession(new=True)

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:  # type: ignore[override]
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        response.vary.add("Cookie")
        if session.rotated_from is not None:
            self.store.delete(session.rotated_from)
            session.rotated_from = None
        if not session:
            if not session.new or session.modified:
                self.store.delete(session.sid)
                response.delete_cookie(
                    name,
                    domain=domain,
                    path=path,
                    secure=self.get_cookie_secure(app),
                    samesite=self.get_cookie_samesite(app),
                    httponly=self.get_cookie_httponly(app),
                )
            return
        if not (session.modified or session.new or self.should_set_cookie(app, session)):
            return
        ttl = self.ttl if self.ttl is not None else app.permanent_session_lifetime.total_seconds()
        written = self.store.save(session.sid, dict(session), ttl, must_exist=not session.new)
        if not written:
            # Ended on the server while this request ran: make the browser drop it too.
            response.delete_cookie(name, domain=domain, path=path)
            return
        # The index entry must live as long as the session it points to, or a valid logout
        # token would end nothing (Back-Channel Logout 1.0 §2.7): renew both together.
        if isinstance(self.index, RenewableSessionIndex):
            self.index.touch(session.sid, ttl)
        response.set_cookie(
            name,
            session.sid,
            expires=self.get_expiration_time(app, session),
            httponly=self.get_cookie_httponly(app),
            domain=domain,
            path=path,
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
        )


@dataclass
class _State:
    receiver: BackchannelLogoutReceiver
    store: SessionStore | None
    index: SessionIndex
    issuer: str
    frontchannel_session_required: bool = True


_NO_STORE = {"Cache-Control": "no-cache, no-store", "Pragma": "no-cache"}
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]
_FRONT_PAGE = "<!doctype html><html><head><title>Logged out</title></head><body>{}</body></html>"


class RPLogout:
    """Flask extension exposing the logout endpoints of an OIDC relying party.

    Give either a ready ``receiver``, or ``validator`` + ``session_index`` +
    ``session_store`` (then sessions are ended by deleting them from the store). With a
    ``session_store`` the app's session interface is replaced by
    :class:`ServerSideSessionInterface`. State lives in ``app.extensions["oidc_logout_rp"]``.

    :param backchannel_path: where ``POST`` back-channel logout requests arrive (always mounted).
    :param frontchannel: mount ``GET frontchannel_path``; only for RPs registered with a
        ``frontchannel_logout_uri`` (default False: no route, no cross-site logout by GET).
    :param frontchannel_session_required: the value registered as
        ``frontchannel_logout_session_required``. True (default): a request without both
        ``iss`` and ``sid`` is refused with 400. False: such a request ends the session of the
        browser's own cookie (Front-Channel Logout 1.0 §2).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        validator: LogoutTokenValidator | None = None,
        session_index: SessionIndex | None = None,
        session_store: SessionStore | None = None,
        receiver: BackchannelLogoutReceiver | None = None,
        backchannel_path: str = "/oidc/backchannel-logout",
        frontchannel_path: str = "/oidc/frontchannel-logout",
        frontchannel: bool = False,
        frontchannel_session_required: bool = True,
    ) -> None:
        self.validator = validator
        self.session_index = session_index
        self.session_store = session_store
        self.receiver = receiver
        self.backchannel_path = backchannel_path
        self.frontchannel_path = frontchannel_path
        self.frontchannel = frontchannel
        self.frontchannel_session_required = frontchannel_session_required
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        receiver = self.receiver
        store = self.session_store
        if receiver is None:
            if self.validator is None or self.session_index is None or store is None:
                raise ValueError("give receiver, or validator + session_index + session_store")
            receiver = BackchannelLogoutReceiver(self.validator, self.session_index, store.delete)
        if store is not None:
            app.session_interface = ServerSideSessionInterface(store, index=receiver.sessions)
        else:
            app.after_request(_renew_cookie_session_index)
        app.extensions[EXTENSION_KEY] = _State(
            receiver=receiver,
            store=store,
            index=receiver.sessions,
            issuer=receiver.validator.issuer,
            frontchannel_session_required=self.frontchannel_session_required,
        )
        # Every method is routed to the views so that a wrong one still gets a 405 with
        # Cache-Control: no-store (§2.8) instead of Flask's cacheable default.
        app.add_url_rule(
            self.backchannel_path,
            "oidc_logout_rp_backchannel",
            _backchannel_view,
            methods=_ALL_METHODS,
            provide_automatic_options=False,
        )
        paths = {self.backchannel_path}
        if self.frontchannel:
            app.add_url_rule(
                self.frontchannel_path,
                "oidc_logout_rp_frontchannel",
                _frontchannel_view,
                methods=_ALL_METHODS,
                provide_automatic_options=False,
            )
            paths.add(self.frontchannel_path)

        def no_store_on_logout_paths(response: Response) -> Response:
            # Safety net for methods outside _ALL_METHODS (Werkzeug answers those itself).
            if request.path in paths:
                response.headers["Cache-Control"] = (
                    "no-store" if request.path == self.backchannel_path else _NO_STORE["Cache-Control"]
                )
                response.headers.setdefault("Pragma", "no-cache")
            return response

        app.after_request(no_store_on_logout_paths)

    # -- helpers for the app's own login/logout views --------------------------------

    @staticmethod
    def _state() -> _State:
        from flask import current_app

        return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]

    def register_login(self, sub: str | None, sid: str | None) -> str:
        """Rotate the session id and index it under the ID token's sub/sid; return it."""
        state = self._state()
        if isinstance(session, ServerSession):
            if not session.new:
                state.index.forget(session.sid)
            session.regenerate()
            local_id = session.sid
        else:  # cookie sessions cannot be ended server-side; index a random marker
            local_id = session.setdefault("_oidc_local_sid", _new_id())
        state.index.register(state.issuer, sub, sid, local_id)
        return local_id

    def logout_local(self) -> None:
        """End the current browser's session here (before redirecting to end_session)."""
        _end_own_session(self._state())


def _end_own_session(state: _State) -> None:
    local_id = session.sid if isinstance(session, ServerSession) else session.get("_oidc_local_sid")
    if local_id:
        state.index.forget(local_id)
        if state.store is not None:
            state.store.delete(local_id)
    session.clear()


def _renew_cookie_session_index(response: Response) -> Response:
    """Cookie sessions: renew the index entry whenever Flask re-sends the cookie."""
    from flask import current_app

    local_id = session.get("_oidc_local_sid")
    state: _State | None = current_app.extensions.get(EXTENSION_KEY)
    if (
        local_id
        and state is not None
        and isinstance(state.index, RenewableSessionIndex)
        and current_app.session_interface.should_set_cookie(current_app, session)
    ):
        state.index.touch(local_id, current_app.permanent_session_lifetime.total_seconds())
    return response


def _method_not_allowed(allowed: str) -> Response:
    body = f'{{"error": "invalid_request", "error_description": "method_not_allowed: use {allowed}"}}'
    return Response(
        body,
        status=405,
        mimetype="application/json",
        headers={"Allow": allowed, "Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _backchannel_view() -> Response:
    # Back-Channel Logout 1.0 §2.5: "The OP sends an HTTP POST request"; §2.8: responses carry
    # Cache-Control: no-store — a wrong method included.
    if request.method != "POST":
        return _method_not_allowed("POST")
    state: _State = RPLogout._state()
    # The body is read from the stream with a cap (16 KiB + 1 byte at most, nothing at all
    # when Content-Length is already too large), never with get_data(), which reads it all.
    status, headers, body = handle_backchannel_request(
        request.stream, request.content_type, state.receiver, content_length=request.content_length
    )
    return Response(body, status=status, headers=headers)


def _frontchannel_view() -> Response:
    # Front-Channel Logout 1.0 §2: the OP renders frontchannel_logout_uri in an iframe,
    # adding iss and sid when frontchannel_logout_session_required; without them the RP
    # logs out the session of this user agent (its own cookie).
    if request.method != "GET":  # a HEAD, POST, … must not log anyone out
        return _method_not_allowed("GET")
    state: _State = RPLogout._state()
    iss, sid = request.args.get("iss"), request.args.get("sid")
    status = 200
    if iss is None and sid is None and state.frontchannel_session_required:
        # Front-Channel Logout 1.0 §2 (frontchannel_logout_session_required): the RP "requires
        # that iss and sid query parameters be included"; a bare GET (any cross-site page can
        # send one) ends nothing.
        status, msg = 400, "Logout request not accepted."
    elif iss is None and sid is None:
        _end_own_session(state)
        msg = "Logged out."
    elif iss is None or sid is None or iss != state.issuer:
        # Front-Channel Logout 1.0 §2: iss and sid are sent together and identify the OP
        # session; a request for another issuer (or with only one of them) ends nothing.
        status, msg = 400, "Logout request not accepted."
    else:
        ended = state.index.local_sessions_for(iss, sid=sid)
        for local_id in ended:
            state.receiver.end_local_session(local_id)
            state.index.forget(local_id)
        own = session.sid if isinstance(session, ServerSession) else session.get("_oidc_local_sid")
        if own in ended:
            session.clear()
        msg = "Logged out."
    # Front-Channel Logout 1.0: the response must not be cached (Cache-Control no-cache,
    # no-store; Pragma no-cache). No X-Frame-Options: the OP loads this page in an iframe.
    # Only the OP may frame this page (Front-Channel Logout §4 renders it in the OP's iframe).
    headers = dict(_NO_STORE)
    headers["Content-Security-Policy"] = f"default-src 'none'; frame-ancestors {_origin(state.issuer)}"
    return Response(_FRONT_PAGE.format(msg), status=status, mimetype="text/html", headers=headers)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "'none'"
