"""Framework-free error base: an error code from the governing spec, a description and the
HTTP status it maps to. Endpoints raise these; one place renders them (oidc_logout.flask)."""

from __future__ import annotations


class OIDCLogoutError(Exception):
    """An error with an OAuth/OIDC error code (RFC 6749 §5.2 style)."""

    error: str = "server_error"
    status_code: int = 400

    def __init__(
        self,
        description: str = "",
        *,
        error: str | None = None,
        status_code: int | None = None,
        challenge: str | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code
        #: RFC 6750 §3 / RFC 9110 §11.6.1: the ``WWW-Authenticate`` value of a 401 or 403.
        self.challenge = challenge

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error needs besides its body."""
        if self.challenge:
            return {"WWW-Authenticate": self.challenge}
        if self.status_code == 401:
            return {"WWW-Authenticate": f'Bearer error="{self.error}"'}
        return {}

    def as_dict(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


class InvalidRequest(OIDCLogoutError):
    error = "invalid_request"


class InvalidClientMetadata(OIDCLogoutError):
    """RFC 7591 §3.2.2."""

    error = "invalid_client_metadata"


class InvalidRedirectURI(OIDCLogoutError):
    """RFC 7591 §3.2.2."""

    error = "invalid_redirect_uri"


class NotFound(OIDCLogoutError):
    error = "not_found"
    status_code = 404


class InsufficientScope(OIDCLogoutError):
    """RFC 6750 §3.1."""

    error = "insufficient_scope"
    status_code = 403


class AccessDenied(OIDCLogoutError):
    """RFC 6749 §4.1.2.1 / RFC 7591 §3: the server refuses the request (e.g. registration closed)."""

    error = "access_denied"
    status_code = 403


class TooManyRequests(OIDCLogoutError):
    """RFC 6585 §4: a rate limit is used up; ``Retry-After`` says when to come back."""

    error = "too_many_requests"
    status_code = 429

    def __init__(self, description: str = "", *, retry_after: int = 60) -> None:
        super().__init__(description)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(int(self.retry_after))}


class InvalidToken(OIDCLogoutError):
    """RFC 6750 §3.1."""

    error = "invalid_token"
    status_code = 401


__all__ = [
    "AccessDenied",
    "InsufficientScope",
    "InvalidClientMetadata",
    "InvalidRedirectURI",
    "InvalidRequest",
    "InvalidToken",
    "NotFound",
    "OIDCLogoutError",
    "TooManyRequests",
]
