"""Opt-in: answer the common RFC 7009 revocation before Flask (:class:`RevocationMiddleware`).

The revocation route always tries the fast path first (``oidc_logout/rfc7009/fastpath.py``),
inside Flask: the app's ``before_request``/``after_request``/``teardown`` hooks run for every
revocation. :func:`install_wsgi_fast_path` moves that fast path in front of Flask as WSGI
middleware: a confidential client revoking one of its own live access tokens is then answered
without a Flask request at all (measured in docs/performance.md, "Against node-oidc-provider").
Every other request, and every request the fast path declines, reaches Flask unchanged (body
included) and the route runs the full endpoint as before.

The trade-off, and why this is opt-in: for the revocations the middleware answers, **the host
app's request hooks, Flask signals and WSGI middleware installed inside ``app.wsgi_app`` after
this call do not run** (a ``before_request`` that logs, rate-limits or rejects requests never
sees them). The route's own hooks are reproduced: the body limit (``max_request_bytes``; a
larger body goes to Flask, which answers 413) and the response headers (``Cache-Control:
no-store``, ``Pragma: no-cache``, ``X-Content-Type-Options: nosniff``, ``X-Frame-Options:
DENY``); the revocation counter of ``/metrics`` counts them. The bundled OP
(:func:`oidc_logout.demo.idp.create_idp_app`, what ``oidc-logout serve`` runs without
``--app``) has no hooks of its own and installs it.
"""

from __future__ import annotations

from authlib.integrations.flask_oauth2.signals import token_revoked
from flask import Flask

from .. import metrics
from ..rfc7009.fastpath import RevocationMiddleware
from .state import ExtensionState


def install_wsgi_fast_path(app: Flask) -> bool:
    """Put :class:`RevocationMiddleware` in front of ``app``'s Flask request handling for the
    extension's revocation route. Call it after ``OIDCLogout(app)``/``init_app(app)``. Returns
    False (and installs nothing) when the app serves no revocation route (extension mode:
    revocation is the host's)."""
    found = app.extensions.get("oidc_logout")
    if not isinstance(found, ExtensionState):
        raise RuntimeError("install_wsgi_fast_path needs OIDCLogout registered on the app first")
    if "revoke" not in found.route_names:
        return False
    provider = found.provider
    app.wsgi_app = RevocationMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        provider.engine,
        path=f"{found.url_prefix}/revoke",
        max_body=provider.settings.max_request_bytes,
        # Authlib's token_revoked signal carries ORM objects: with a listener, the full path.
        enabled=lambda: not token_revoked.receivers,
        on_revoked=lambda: metrics.revoked("access_token"),
    )
    return True


__all__ = ["install_wsgi_fast_path"]
