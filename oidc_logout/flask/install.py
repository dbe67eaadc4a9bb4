"""The one install sequence of ``OIDCLogout.init_app``, for both modes.

``init_app`` first picks what the extension is applied to (an :class:`Installation`):

* extension mode -- the host's own Authlib ``AuthorizationServer``, a
  :class:`~oidc_logout.flask.host.HostContext` over it, a
  :class:`~oidc_logout.host.HostTokenStore` over the host's token model and
  :func:`~oidc_logout.flask.host.host_endpoints`;
* turnkey mode -- the package's own small Authlib server
  (:class:`~oidc_logout.flask.server.OPServer`), which is its own context, the package's own
  token store (:class:`~oidc_logout.storage.own_tokens.OwnTokenStore`) and
  :func:`~oidc_logout.flask.server.own_endpoints`.

Then :func:`install` applies the same steps to either: the endpoints are registered on the
server with Authlib's ``register_endpoint`` (so ``create_endpoint_response("end_session")``,
``("introspection")`` and, where the package owns it, ``("revocation")`` answer on it), and the
token store is registered for the provider's database engine, so every termination on that
engine (Flask request, CLI, worker, expiry sweep, admin API) revokes its tokens through
:func:`oidc_logout.token_stores.revoke_tokens`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..provider import Provider
from ..token_stores import TokenStore, register_token_store

__all__ = ["Installation", "install", "install_endpoints"]

#: Set on an Authlib server once the extension's endpoints are registered on it.
_INSTALLED = "_oidc_logout_installed"


@dataclass(frozen=True)
class Installation:
    """What ``init_app`` applies the extension to."""

    #: The Authlib ``AuthorizationServer`` the endpoints are registered on.
    server: Any
    #: The :class:`~oidc_logout.context.ServerContext` the views and endpoints use as their
    #: server (``app.extensions["oidc_logout"].server``): the server itself in turnkey mode.
    context: Any
    #: Where terminations revoke this server's tokens.
    token_store: TokenStore
    #: Endpoint instances (Authlib ``Endpoint``) to register on ``server``.
    endpoints: tuple[Any, ...]


def install(provider: Provider, installation: Installation) -> None:
    """The install steps both modes share: register the endpoints on the server (once per
    server) and the token store for the provider's engine."""
    install_endpoints(installation.server, installation.endpoints)
    register_token_store(provider.engine, installation.token_store)


def install_endpoints(server: Any, endpoints: Iterable[Any]) -> bool:
    """Register ``endpoints`` on the Authlib ``server`` unless this was done before (a host may
    share one module-level server between several applications, as Authlib's guides build
    it); returns whether they were registered now."""
    if getattr(server, _INSTALLED, False):
        return False
    for endpoint in endpoints:
        server.register_endpoint(endpoint)
    setattr(server, _INSTALLED, True)
    return True
