"""The base of the extension's endpoints registered on a host's Authlib server."""

from __future__ import annotations

from typing import Any

from .state import state

__all__ = ["OnHostServer"]


class OnHostServer:
    """An endpoint of ours registered on the host's server. Its ``self.server`` is the
    :class:`~oidc_logout.flask.host.HostContext` of the application serving the request (a
    host may share one module-level server between several applications, as Authlib's guides
    build it); ``register_endpoint`` hands it the bare host server, which is not kept."""

    @property
    def server(self) -> Any:
        return state().server

    @server.setter
    def server(self, value: Any) -> None:
        """The host server the endpoint was registered on: reached through the context."""
