"""What the spec modules need of the authorization server they are registered on.

Authlib hands every grant and endpoint its server as ``self.server``. Ours are registered on a
server that also satisfies :class:`ServerContext`, so the dependency of a spec module on the
request's database session, the provider and the browser's OP session is a typed one that
mypy checks, instead of attributes of an ``Any``. The Flask adapter
(:class:`oidc_logout.flask.server.OPServer`) is one implementation; a test or another framework
can supply its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - types only
    from sqlalchemy.orm import Session

    from .config import Settings
    from .provider import Provider
    from .storage.models import OPSession

__all__ = ["ServerContext"]


class ServerContext(Protocol):
    """**Protocol:** the authorization server as the spec modules see it."""

    @property
    def db(self) -> Session:
        """The request's database session: one transaction per request, owned by the adapter
        (it commits a successful response and rolls back an error)."""

    @property
    def provider(self) -> Provider:
        """The OP core: settings, keys, users, termination and delivery."""

    @property
    def settings(self) -> Settings: ...

    def query_client(self, client_id: str) -> Any:
        """Authlib's client lookup (an :class:`~oidc_logout.core.client.OAuthClient` or None)."""

    def current_session(self) -> OPSession | None:
        """The live OP session of the user agent making this request, if any."""
