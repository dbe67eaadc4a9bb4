"""Authlib's end_session endpoint, made strict: errors stop the logout instead of quietly
dropping the redirect, and the logout itself is one call to terminate()."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.rpinitiated import EndSessionEndpoint as _EndSessionEndpoint
from authlib.oidc.rpinitiated import EndSessionRequest


class EndSessionEndpoint(_EndSessionEndpoint):  # type: ignore[misc]
    def get_server_jwks(self) -> dict[str, Any]:
        return self.server.provider.keyring.public_jwks()

    def get_algorithms(self) -> list[str]:
        return self.server.provider.keyring.algs()

    def validate_request(self, request: Any) -> EndSessionRequest:
        data = request.payload.data
        for name in ("id_token_hint", "client_id", "post_logout_redirect_uri", "state",
                     "logout_hint", "ui_locales"):
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > 8192):
                raise InvalidRequestError(f"'{name}' is malformed")
        client_id = data.get("client_id")
        if client_id and self.server.query_client(client_id) is None:
            raise InvalidRequestError("unknown 'client_id'")
        try:
            req: EndSessionRequest = super().validate_request(request)
        except (TypeError, ValueError, KeyError, RecursionError):  # joserfc on e.g. {"crit": 5}
            raise InvalidRequestError("'id_token_hint' is malformed") from None
        claims = req.id_token_claims
        if claims is not None:
            # rpinitiated §2: "the OP MUST validate that it was the issuer of the ID Token".
            # The signature proves the key; the iss claim must name this OP too.
            if claims.get("iss") != self.server.provider.settings.issuer:
                raise InvalidRequestError("'id_token_hint' was not issued by this OP")
            if req.client is None:
                raise InvalidRequestError("'id_token_hint' names no client of this OP")
        uri = data.get("post_logout_redirect_uri")
        if uri and not req.redirect_uri:
            # rpinitiated §3: "The OP MUST NOT perform post-logout redirection if the
            # post_logout_redirect_uri value supplied does not exactly match one of the
            # previously registered post_logout_redirect_uris values." We refuse the whole
            # request (§4: an error in the request means no redirection), so an RP learns of a
            # misconfiguration instead of leaving its user stranded.
            if req.client is None:
                raise InvalidRequestError(
                    "'post_logout_redirect_uri' needs 'client_id' or 'id_token_hint' to identify the client")
            if uri not in (req.client.client_metadata.get("post_logout_redirect_uris") or []):
                raise InvalidRequestError("'post_logout_redirect_uri' is not registered for this client")
        return req

    def resolve_client_from_id_token_claims(self, id_token_claims: dict[str, Any]) -> Any | None:
        # Core §2: aud is a string or an array; a one-element array names the client too
        # (Authlib's default only resolves the string form). With several audiences, azp names it.
        aud = id_token_claims.get("aud")
        if isinstance(aud, list):
            if len(aud) == 1 and isinstance(aud[0], str):
                aud = aud[0]
            elif isinstance(id_token_claims.get("azp"), str):
                aud = id_token_claims["azp"]
        if isinstance(aud, str):
            return self.server.query_client(aud)
        return None

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        # The Flask view performs the termination (it knows the browser's OP session).
        return None
