"""Where the extension keeps its state on a Flask app (``app.extensions["oidc_logout"]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

if TYPE_CHECKING:  # pragma: no cover - types only
    from ..core.bearer import BearerProtector
    from ..provider import Provider

__all__ = ["ExtensionState", "state"]


@dataclass(frozen=True)
class ExtensionState:
    provider: Provider
    #: The :class:`~oidc_logout.context.ServerContext` the views use: the package's own
    #: :class:`OPServer` (turnkey) or a :class:`~oidc_logout.flask.host.HostContext` over the
    #: host's server (extension mode). Typed ``Any``: the views call Authlib's server API on it.
    server: Any
    #: Where the blueprint is mounted (``""`` or ``"/a/b"``).
    url_prefix: str = ""
    #: The route names the blueprint serves (discovery may be left to the host).
    route_names: frozenset[str] = field(default_factory=frozenset)
    #: RFC 6750 bearer-token checks of the extension's protected routes (built once).
    bearer: BearerProtector | None = None


def state() -> ExtensionState:
    """The extension state of the current app; a clear error when it was never registered."""
    try:
        found = current_app.extensions["oidc_logout"]
    except KeyError:
        raise RuntimeError("OIDCLogout is not registered on this app; did you forget init_app()?") from None
    assert isinstance(found, ExtensionState)
    return found
