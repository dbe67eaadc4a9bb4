"""Extension mode: RFC 7009 token revocation registered on the host's own Authlib
``AuthorizationServer``, over the host's token model (Authlib's ``OAuth2TokenMixin``).

The host keeps its route (``POST /oauth/revoke`` calling
``server.create_endpoint_response("revocation")``); what answers is
:class:`HostRevocationEndpoint`, with the package's RFC 7009 behaviour
(:mod:`oidc_logout.rfc7009.endpoint`, the turnkey endpoint):

* §2.1 the client authenticates as at the token endpoint (a public client sends its
  ``client_id``; a confidential one may use either secret method), and a token issued to
  another client is refused with ``invalid_grant`` and left alone (the turnkey answer; the
  token stays active in introspection and at the host's resource protection);
* §2.2 an unknown or already revoked token answers 200 and changes nothing;
* §2.2.1 an ID token the host signed answers ``unsupported_token_type`` (HTTP 400);
* revoking an access token sets the row's ``access_token_revoked_at`` only: the refresh token
  of the row keeps working (§2.1 allows revoking it, the turnkey does not);
* revoking a refresh token terminates its grant: ``terminate(by_grant(...))`` with the grant
  id ``host-token:<table>:<pk>`` of the presented row, the one termination path; the host's
  :class:`~oidc_logout.host.HostTokenStore` revokes the row and the access tokens of its
  rotation chain (what "the grant" of a host row covers is documented there) and the
  termination record is the audit row. No session ends and nobody is notified: a client
  revoking its own grant needs no logout token, and the OP session and the client's
  participation in it live on (the client still hears of the session's end).

Every change is a conditional ``UPDATE`` (only not-yet-revoked values): of two concurrent
revocations of one refresh token, one revokes it and records the termination; the other finds
nothing left to revoke, gets that same termination back from ``terminate`` and answers 200 as
well. The host's bearer validation (``create_bearer_token_validator``: the mixin's
``is_revoked()``) and :class:`~oidc_logout.flask.host.HostIntrospectionEndpoint` read the same
columns, so a revocation is seen by both the moment it commits.

**A host that registered its own revocation endpoint.** Authlib keeps a list of endpoints per
name and answers with the first one that does not raise ``ContinueIteration``, i.e. the one
registered first. Leaving the host's ``create_revocation_endpoint`` class in front would
silently keep the old behaviour (one row flipped, no grant, no audit), and putting ours in
front would silently make the host's dead code. So :func:`refuse_other_revocation` refuses both
orders with a ``RuntimeError`` naming the host's endpoint: remove its
``register_endpoint(...)`` (docs/integration.md, section 2).
"""

from __future__ import annotations

import json
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, UnsupportedTokenTypeError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from jwcrypto import jwk, jws
from sqlalchemy.orm import Session

from .. import metrics
from ..core.client import check_client_credentials_syntax
from ..host import Presented, find_presented, host_grant_id, revoke_access_token, row_pk
from ..limits import plausible_token
from ..rfc7009.endpoint import REFRESH_REVOKED_REASON
from ..storage.base import utcnow
from ..termination import by_grant, terminate
from .on_host import OnHostServer

__all__ = ["HostRevocationEndpoint", "refuse_other_revocation"]

#: Authlib's endpoint name: the host's route calls ``create_endpoint_response(ENDPOINT)``.
ENDPOINT = _RevocationEndpoint.ENDPOINT_NAME
#: Set on the OAuth2Request by authenticate_token: the refresh token (not the access token) was presented.
_REFRESH_ATTRIBUTE = "oidc_logout_revoke_refresh"


class HostRevocationEndpoint(OnHostServer, _RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009 over the host's token model; see the module documentation for what it
    revokes. Registered by :func:`oidc_logout.flask.host.host_endpoints`; ``self.server`` is the current
    application's :class:`~oidc_logout.flask.host.HostContext` (its ``db`` is the host's
    request session)."""

    # §2.1: "The client also includes its authentication credentials as described in
    # Section 2.3. of [RFC6749]": the token endpoint's methods; a public client sends client_id
    # (Authlib accepts "none" only from a client registered with it).
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")

    def __init__(self, token_model: Any) -> None:
        super().__init__()
        self.token_model = token_model

    # -- the request -----------------------------------------------------------------------------
    def authenticate_endpoint_client(self, request: Any) -> Any:
        # A malformed Basic header or client_id is invalid_client, not a crash in Authlib's parser.
        check_client_credentials_syntax(request)
        return super().authenticate_endpoint_client(request)

    def check_params(self, request: Any, client: Any) -> None:
        if not isinstance(request.form.get("token"), str) or not request.form["token"]:
            raise InvalidRequestError("the 'token' parameter is required")  # §2.1: REQUIRED
        # §2.1: the hint is only a hint ("If the server is unable to locate the token using the
        # given hint, it MUST extend its search across all of its supported token types"): an
        # unknown value is ignored, as at the turnkey endpoint.

    def query_token(self, token_string: str, token_type_hint: str | None) -> Presented | None:
        if not plausible_token(token_string):
            return None  # §2.2: an invalid token is answered 200
        found = find_presented(self.server.db, self.token_model, token_string, token_type_hint)
        if found is not None:
            return found
        if token_string.count(".") == 2 and _signed_by(token_string, self.server.id_token_jwks()):
            # §2.2.1 unsupported_token_type: "The authorization server does not support the
            # revocation of the presented token type": an ID token the host signed. The error
            # response is RFC 6749 §5.2's, HTTP 400 (Authlib's class defaults to 401).
            err = UnsupportedTokenTypeError()
            err.description = "ID tokens cannot be revoked; revoke the refresh or access token"
            err.status_code = 400
            raise err
        return None

    def authenticate_token(self, request: Any, client: Any) -> Any:
        """The host's token row (what Authlib's ``token_revoked`` signal then carries, as with
        the host's own endpoint); which of its values was presented rides on the request."""
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        # §2.1: the server "verifies whether the token was issued to the client making the
        # revocation request. If this validation fails, the request is refused and the client
        # is informed of the error": invalid_grant (RFC 6749 §5.2), as at the turnkey endpoint.
        if token is None:
            return None
        if token.row.client_id != client.get_client_id():
            raise InvalidGrantError("the token was not issued to this client")
        setattr(request, _REFRESH_ATTRIBUTE, token.refresh)
        return token.row

    # -- the revocation --------------------------------------------------------------------------
    def revoke_token(self, token: Any, request: Any) -> None:
        db: Session = self.server.db
        pk = row_pk(token)
        if getattr(request, _REFRESH_ATTRIBUTE, False):
            # §2.2: "invalid tokens do not cause an error response": revoked already, nothing to do.
            if not token.refresh_token_revoked_at:  # the mixin: 0 or NULL is not revoked
                # §2.1: "If the token passed to the request is a refresh token [...] the
                # authorization server SHOULD also invalidate all access tokens based on the
                # same authorization grant": the grant's termination.
                terminate(
                    db,
                    by_grant(host_grant_id(self.token_model, pk)),
                    reason=REFRESH_REVOKED_REASON,
                    initiator=f"client:{token.client_id}",
                )
                metrics.revoked("refresh_token", db)
        elif revoke_access_token(db, self.token_model, pk, utcnow()):
            metrics.revoked("access_token", db)
        db.commit()


def _signed_by(token: str, jwks: dict[str, Any]) -> bool:
    """Whether ``token`` is a JWS that one of ``jwks``'s keys signed (an ID token of the host)."""
    try:
        obj = jws.JWS()
        obj.deserialize(token)
        obj.verify(jwk.JWKSet.from_json(json.dumps(jwks)))
        return True
    except Exception:
        return False


def refuse_other_revocation(server: Any) -> None:
    """Refuse a revocation endpoint of the host's own on ``server``, registered before or after
    the extension registers :class:`HostRevocationEndpoint` under Authlib's name
    ``"revocation"`` (Authlib would answer with whichever came first and never reach the
    other). Idempotent per server."""
    theirs = [e for e in getattr(server, "_endpoints", {}).get(ENDPOINT, []) if not _ours(e)]
    if theirs:
        raise RuntimeError(_conflict(theirs[0]))
    if getattr(server, "_oidc_logout_revocation_guarded", False):
        return
    register = server.register_endpoint

    def register_endpoint(endpoint: Any) -> Any:
        if getattr(endpoint, "ENDPOINT_NAME", None) == ENDPOINT and not _ours(endpoint):
            raise RuntimeError(_conflict(endpoint))
        return register(endpoint)

    server.register_endpoint = register_endpoint
    server._oidc_logout_revocation_guarded = True


def _ours(endpoint: Any) -> bool:
    cls = endpoint if isinstance(endpoint, type) else type(endpoint)
    return issubclass(cls, HostRevocationEndpoint)


def _conflict(endpoint: Any) -> str:
    cls = endpoint if isinstance(endpoint, type) else type(endpoint)
    return (
        f"the host's AuthorizationServer has its own {ENDPOINT!r} endpoint "
        f"({cls.__module__}.{cls.__qualname__}); oidc-logout registers "
        f"{HostRevocationEndpoint.__module__}.HostRevocationEndpoint under that name (RFC 7009 "
        "over the host's token model, revoking the refresh token's grant), and Authlib would only "
        "ever answer with the first of the two. Remove the host's register_endpoint(...) for it; "
        'the host\'s route keeps calling create_endpoint_response("revocation").'
    )
