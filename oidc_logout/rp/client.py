"""Local logout helpers: RP-Initiated Logout URL and refresh-token revocation (RFC 7009)."""

from __future__ import annotations

import base64
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import requests

from ._http import HTTPLimits, check_url, read_capped
from .discovery import ProviderMetadata
from .errors import RevocationError

__all__ = ["build_end_session_url", "revoke_refresh_token"]


def build_end_session_url(
    metadata: ProviderMetadata,
    *,
    id_token_hint: str | None = None,
    post_logout_redirect_uri: str | None = None,
    state: str | None = None,
    client_id: str | None = None,
    logout_hint: str | None = None,
    ui_locales: str | None = None,
) -> str:
    """The URL to send the browser to for RP-Initiated Logout 1.0 §2.

    Query parameters already in ``end_session_endpoint`` are kept (OAuth 2.0 §3.1 style).
    §2 recommends ``id_token_hint``; ``client_id`` is needed with ``post_logout_redirect_uri``
    when no ``id_token_hint`` is sent.
    """
    endpoint = metadata.end_session_endpoint
    if not endpoint:
        raise ValueError("the OP does not advertise an end_session_endpoint")
    params = {
        "id_token_hint": id_token_hint,
        "logout_hint": logout_hint,
        "client_id": client_id,
        "post_logout_redirect_uri": post_logout_redirect_uri,
        "state": state,
        "ui_locales": ui_locales,
    }
    if post_logout_redirect_uri and not (id_token_hint or client_id):
        raise ValueError("post_logout_redirect_uri needs id_token_hint or client_id")
    parts = urlsplit(endpoint)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def revoke_refresh_token(
    metadata: ProviderMetadata,
    refresh_token: str,
    *,
    client_id: str,
    client_secret: str | None = None,
    auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = "client_secret_basic",
    session: requests.Session | None = None,
    limits: HTTPLimits = HTTPLimits(),
) -> None:
    """Revoke ``refresh_token`` at the OP's revocation endpoint (RFC 7009 §2.1).

    Returns on HTTP 200 — which RFC 7009 §2.2 also uses for tokens that were already
    invalid — and raises :class:`RevocationError` otherwise (``reason`` is
    ``unavailable`` for 503, when the client should retry later, §2.2.1).
    """
    endpoint = metadata.revocation_endpoint
    if not endpoint:
        raise RevocationError("no_endpoint", "the OP does not advertise a revocation_endpoint")
    check_url(endpoint, "revocation_endpoint", RevocationError)
    data = {"token": refresh_token, "token_type_hint": "refresh_token"}
    headers = {"Accept": "application/json"}
    if auth_method == "client_secret_basic":
        if client_secret is None:
            raise ValueError("client_secret_basic needs a client_secret")
        # RFC 6749 §2.3.1: form-urlencode id and secret before base64.
        raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    elif auth_method == "client_secret_post":
        if client_secret is None:
            raise ValueError("client_secret_post needs a client_secret")
        data.update(client_id=client_id, client_secret=client_secret)
    elif auth_method == "none":
        data["client_id"] = client_id
    else:
        raise ValueError(f"unsupported auth_method {auth_method!r}")
    http = session or requests.Session()
    try:
        resp = http.post(
            endpoint,
            data=data,
            headers=headers,
            timeout=limits.timeout,
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as exc:
        raise RevocationError("fetch_failed", f"request failed: {type(exc).__name__}") from None
    with resp:
        read_capped(resp, limits, RevocationError)
        if resp.status_code == 200:
            return
        if resp.status_code == 503:
            raise RevocationError("unavailable", "revocation endpoint is temporarily unavailable")
        raise RevocationError("bad_status", f"revocation failed with HTTP {resp.status_code}")
