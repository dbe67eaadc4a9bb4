"""Flask adapter for the Shared Signals push receiver (RFC 8935).

Usage, beside :class:`~oidc_logout.rp.flask.RPLogout` so that SETs end the same sessions
back-channel logout ends::

    rp = RPLogout(app, validator=..., session_index=index, session_store=store)
    ssf = SSFPush(app, validator=set_validator, push_authorization="Bearer <random>")
    # SSF stream delivery: {"method": "urn:ietf:rfc:8935",
    #                       "endpoint_url": "https://rp.example/ssf/events",
    #                       "authorization_header": "Bearer <random>"}

Without ``RPLogout`` pass a ready :class:`~oidc_logout.rp.ssf_receiver.SSFReceiver`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, request

from .ssf import SETValidator
from .ssf_receiver import SSFReceiver

__all__ = ["SSFPush"]

EXTENSION_KEY = "oidc_logout_rp_ssf"
_RP_EXTENSION_KEY = "oidc_logout_rp"


class SSFPush:
    """Mounts ``POST path`` as an RFC 8935 push endpoint; state in ``app.extensions``.

    :param receiver: a ready receiver; or give ``validator`` and the receiver is built on the
        session index and session store of the app's :class:`~oidc_logout.rp.flask.RPLogout`
        (``init_app`` it first). Extra keyword arguments go to :class:`SSFReceiver`
        (callbacks, ``push_authorization``, ...).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        receiver: SSFReceiver | None = None,
        validator: SETValidator | None = None,
        path: str = "/ssf/events",
        **receiver_options: Any,
    ) -> None:
        self.receiver = receiver
        self.validator = validator
        self.path = path
        self.receiver_options = receiver_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("SSFPush is already registered on this app")
        receiver = self.receiver
        if receiver is None:
            rp = app.extensions.get(_RP_EXTENSION_KEY)
            if self.validator is None or rp is None:
                raise RuntimeError(
                    "give SSFPush a receiver, or a validator and init RPLogout on the app first "
                    "(its session index and store are the ones SETs end sessions in)"
                )
            receiver = SSFReceiver(
                self.validator, rp.index, rp.receiver.end_local_session, **self.receiver_options
            )
            self.receiver = receiver
        app.extensions[EXTENSION_KEY] = receiver
        app.add_url_rule(
            self.path,
            "oidc_logout_rp_ssf_push",
            _push_view,
            methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            provide_automatic_options=False,
        )

    @staticmethod
    def receiver_of(app: Flask | None = None) -> SSFReceiver:
        """The app's receiver (for pages that show :attr:`SSFReceiver.history`)."""
        target = app or current_app
        return target.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def _push_view() -> Response:
    if request.method != "POST":
        # RFC 8935 §2.1: SETs are delivered with HTTP POST.
        return Response(
            '{"err": "invalid_request", "description": "method_not_allowed: use POST"}',
            status=405,
            mimetype="application/json",
            headers={"Allow": "POST", "Cache-Control": "no-store"},
        )
    receiver = SSFPush.receiver_of()
    # The body is read from the stream with a cap, never with get_data() (which reads it all).
    status, headers, body = receiver.handle_push(
        request.stream,
        request.content_type,
        request.headers.get("Authorization"),
        content_length=request.content_length,
    )
    return Response(body, status=status, headers=headers)
