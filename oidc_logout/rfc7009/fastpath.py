"""A fast path for the common RFC 7009 request: a confidential client revoking one of its own
live access tokens.

Client authentication (RFC 7009 §2.1, "client_secret_basic" or "client_secret_post") and the
revocation of the access token are one ``UPDATE ... WHERE ... AND EXISTS (client with this
secret hash)`` in one short transaction on a pooled connection of the engine (a Core statement
built once; SQLAlchemy caches its compiled form): no ORM session, no ORM entity, no Authlib
request objects.

The fast path only ever *succeeds* or *declines*; it never answers an error. It declines
(returns False, having changed nothing) whenever the request is not plainly the common case -
anything unusual in the form or the credentials - or when the ``UPDATE`` changes no row: unknown,
already revoked, refresh token, another client's token, unknown client, wrong secret, public client,
client registered with another method. The caller then runs the full Authlib endpoint
(:mod:`oidc_logout.rfc7009.endpoint`), so every error and every other behaviour of RFC 7009 stays
exactly what that endpoint does; a declined request costs one extra indexed ``UPDATE`` that
matched nothing.

Equivalence with the full path when the ``UPDATE`` changes a row: the full path would have
authenticated the client (its stored SHA-256 equals that of the presented secret, registered
method basic or post, so ``OAuthClient.check_endpoint_auth_method`` accepts either), found the token
by hash, accepted it as issued to that client (``Token.check_client``), and, the token being a
not-yet-revoked access token, set ``revoked_at`` and ``revoked_reason`` on that one row and answered
200 ``{}`` (RFC 7009 §2.2). Expired access tokens, access tokens of a revoked grant and access
tokens already dead by a termination's cut-off (``storage.queries.token_is_active``) are revoked
by both paths alike: the token stays dead either way, so the fast path needs no cut-off lookup.

Timing (the secret check is an SQL equality on hashes, not ``hmac.compare_digest``): what the
database compares is SHA-256(presented secret) with the stored SHA-256(secret). A timing
difference can at most tell an attacker how many leading characters of the stored *hash* a
chosen input's hash shares; it does not help find a secret with that hash (a preimage), and the
OP's generated secrets carry 256 random bits. For a low-entropy secret a leaked hash prefix
would allow an offline guess check - the same exposure a copy of the database gives - and such
timing (a memcmp of a few bytes inside an index lookup, behind a network, with a commit and the
fallback's own work in the same response time) is far below what can be measured. A mismatch
never answers differently: it falls back to the full path, which compares with
``hmac.compare_digest`` and answers ``invalid_client``. The response time does differ between
"revoked by the fast path" and "declined, then the full path": that tells a caller whether its
own valid credentials and its own token were accepted, which it learns anyway.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Callable, Iterable
from typing import Any, cast
from urllib.parse import parse_qsl

from sqlalchemy import (
    Engine,
    Table,
    and_,
    bindparam,
    exists,
    or_,
    select,
    update,
)

from ..limits import MAX_TOKEN_LENGTH, plausible_client_id
from ..storage.base import utcnow
from ..storage.models import Client, Token
from ..tokens import token_hash
from ..vocabulary import TokenKind
from .endpoint import REVOKED_REASON

#: The form parameters of the common case (RFC 7009 §2.1; client_id/client_secret per RFC 6749 §2.3.1).
_FORM_KEYS = frozenset({"token", "token_type_hint", "client_id", "client_secret"})
#: §2.1: the hint values this server defines; any other hint goes the full path.
_HINTS = (None, *TokenKind)
_SECRET_METHODS = ("client_secret_basic", "client_secret_post")
MAX_SECRET = 1024

_tok = cast(Table, Token.__table__)
_cli = cast(Table, Client.__table__)

#: Built once. RFC 7009 §2.1: "the authorization server first validates the client credentials
#: ... and then verifies whether the token was issued to the client making the revocation
#: request" - both are conditions of the one UPDATE; §2.2: an already revoked token is left as is.
REVOKE_ACCESS_TOKEN = (
    update(_tok)
    .where(
        and_(
            _tok.c.token_hash == bindparam("h"),
            _tok.c.kind == TokenKind.ACCESS_TOKEN,
            _tok.c.revoked_at.is_(None),
            _tok.c.client_id == bindparam("cid"),
            exists(
                select(1)
                .select_from(_cli)
                .where(
                    and_(
                        _cli.c.client_id == bindparam("cid"),
                        _cli.c.client_secret_hash == bindparam("sh"),
                        # Two equalities, not IN: an IN list is re-rendered on every execution.
                        or_(*(_cli.c.token_endpoint_auth_method == m for m in _SECRET_METHODS)),
                    )
                )
            ),
        )
    )
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))
)


def _credentials(authorization: str | None, form: dict[str, str]) -> tuple[str, str] | None:
    """(client_id, client_secret) when exactly one secret method is used, plainly; else None."""
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    if authorization is None:
        # RFC 6749 §2.3.1 client_secret_post: both parameters, non-empty.
        if not form_id or not form_secret:
            return None
        client_id, secret = form_id, form_secret
    else:
        # RFC 6749 §2.3.1 / RFC 7617 §2 client_secret_basic, and nothing in the body (RFC 6749
        # §2.3: a client MUST NOT use more than one authentication method in each request):
        # "Basic" SP base64(client_id ":" client_secret).
        if form_id is not None or form_secret is not None:
            return None
        scheme, sep, value = authorization.partition(" ")
        if not sep or scheme.lower() != "basic" or not value or " " in value:
            return None
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeError is a ValueError
            return None
        client_id, sep, secret = decoded.partition(":")
        # RFC 6749 §2.3.1 form-encodes id and secret before Basic; Authlib unquotes them. A
        # value with '%' is left to the full path rather than decoded a second way here.
        if not sep or not client_id or not secret or "%" in decoded:
            return None
    if not plausible_client_id(client_id) or len(secret) > MAX_SECRET:
        return None
    return client_id, secret


def try_revoke_access_token(
    engine: Engine, authorization: str | None, form_items: Iterable[tuple[str, str]], has_query: bool
) -> bool:
    """Revoke the presented access token if the request is the plain common case and the token
    is a live access token of the authenticated confidential client.

    ``authorization``: the Authorization header or None; ``form_items``: every (name, value) of
    the urlencoded body, repeats included; ``has_query``: whether the URL has a query string.
    True: revoked and committed, answer 200 ``{}`` (RFC 7009 §2.2). False: nothing changed, run
    the full endpoint."""
    if has_query:
        return False  # Authlib reads query and body alike: such requests go the full path
    form: dict[str, str] = {}
    for key, value in form_items:
        if key not in _FORM_KEYS or key in form:
            return False  # RFC 6749 §3.2: a repeated parameter - the full path decides
        form[key] = value
    token = form.get("token")
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return False  # §2.1: token is REQUIRED - the full path answers invalid_request
    if form.get("token_type_hint") not in _HINTS:
        return False
    creds = _credentials(authorization, form)
    if creds is None:
        return False
    client_id, secret = creds
    params = {
        "h": token_hash(token),
        "cid": client_id,
        "sh": token_hash(secret),
        "now": utcnow(),
        "reason": REVOKED_REASON,
    }
    # §2.2: "The authorization server responds with HTTP status code 200 if the token has been
    # revoked successfully" - exactly one row; none (or, impossibly with the unique hash, more)
    # leaves everything as it was for the full path (§2.2 200, invalid_client, invalid_grant, ...).
    return _execute(engine, params) == 1


def _execute(engine: Engine, params: dict[str, Any]) -> int:
    """Run REVOKE_ACCESS_TOKEN in its own transaction on a pooled connection; commit if it
    changed exactly one row. Returns the row count.

    Public SQLAlchemy API only: ``Connection.execute`` of the module-level Core statement, whose
    compiled form SQLAlchemy caches per dialect (the column types' bind processing, e.g.
    ``UTCDateTime`` for ``now``, applies as everywhere else). An earlier version ran SQL text
    precompiled through compiler internals on the DBAPI cursor; measured side by side it saved
    too little to justify depending on them (docs/performance.md, "Fast path on public API").

    On PostgreSQL the statement runs in autocommit: one round trip for the ``UPDATE`` instead of
    three (``BEGIN``, ``UPDATE``, ``COMMIT``). The same transaction semantics: a single statement
    is atomic on its own, and it changes at most the one row whose unique ``token_hash`` matches
    (``oauth_token.token_hash`` is UNIQUE), so committing a 0-row ``UPDATE`` is rolling it back.
    On SQLite autocommit costs more than it saves (SQLAlchemy switches the isolation level with a
    ``PRAGMA`` at every checkout and return; measured), so SQLite keeps the explicit transaction.
    A DBAPI error propagates (the app's handler answers 500); the pool invalidates a broken
    connection."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
            count = conn.execute(REVOKE_ACCESS_TOKEN, params).rowcount
            return int(count)
        count = conn.execute(REVOKE_ACCESS_TOKEN, params).rowcount
        if count == 1:
            conn.commit()
        else:
            conn.rollback()
    return int(count)


#: Environ key set by :class:`RevocationMiddleware` when it declined a request: the view then
#: goes straight to the full endpoint (the UPDATE already matched nothing once).
DECLINED = "oidc_logout.revocation_fast_path_declined"
#: The 200 answer of RFC 7009 §2.2 with the headers the Flask route gives it (Authlib's JSON
#: headers, ``_no_store``, and the blueprint's ``after_request`` security headers).
_OK_BODY = b"{}"
_OK_HEADERS = [
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("Content-Length", str(len(_OK_BODY))),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
]
_FORM = "application/x-www-form-urlencoded"

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RevocationMiddleware:
    """WSGI middleware answering the fast path's requests before the web framework sees them.

    It looks only at ``POST <path>`` with a ``Content-Length`` urlencoded body of at most
    ``max_body`` bytes and no query string; it reads the body, runs
    :func:`try_revoke_access_token` and, if that revoked, answers 200 ``{}`` itself (RFC 7009
    §2.2). Every other request - and every declined one, with its body handed on unchanged - goes
    to ``app``, where the route runs the full endpoint. What it skips for the requests it answers
    is everything the framework would run around the view: for a Flask app its
    ``before_request``/``after_request``/``teardown`` hooks and signals. That is why it is an
    explicit opt-in (:func:`oidc_logout.flask.fastpath.install_wsgi_fast_path`); the route's own
    hooks (the body limit and the security headers) are reproduced here.

    ``enabled`` is asked per request (e.g. "no listener on Authlib's ``token_revoked`` signal",
    which expects ORM objects); ``on_revoked`` runs after each revocation (metrics)."""

    def __init__(
        self,
        app: WSGIApp,
        engine: Engine,
        path: str,
        max_body: int,
        enabled: Callable[[], bool] = lambda: True,
        on_revoked: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.engine = engine
        self.path = path
        self.max_body = max_body
        self.enabled = enabled
        self.on_revoked = on_revoked

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        body = self._body(environ)
        if body is None:
            return self.app(environ, start_response)
        try:
            revoked = self._revoke(environ, body)
        except Exception:  # a DBAPI error: the full path answers (and reports) it
            log.warning("revocation fast path failed; the full endpoint answers", exc_info=True)
            revoked = False
        if not revoked:
            environ["wsgi.input"] = io.BytesIO(body)
            environ[DECLINED] = True
            return self.app(environ, start_response)
        self.on_revoked()
        start_response("200 OK", list(_OK_HEADERS))
        return [_OK_BODY]

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The request body if this request may be ours: a urlencoded body of a declared length
        within the limit and no query string; else None (nothing read)."""
        ctype = environ.get("CONTENT_TYPE", "")
        length = environ.get("CONTENT_LENGTH", "")
        if (
            ctype.lower() != _FORM
            or environ.get("QUERY_STRING")
            or "HTTP_TRANSFER_ENCODING" in environ
            or not length.isdigit()
            or not 0 < int(length) <= self.max_body
            or not self.enabled()
        ):
            return None
        body: bytes = environ["wsgi.input"].read(int(length))
        return body

    def _revoke(self, environ: dict[str, Any], body: bytes) -> bool:
        try:
            # Werkzeug decodes the body as UTF-8 and keeps bad %-escapes quoted: anything
            # that is not plain ASCII with valid UTF-8 escapes is the full path's to parse.
            items = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict")
        except (UnicodeError, ValueError):
            return False
        return try_revoke_access_token(self.engine, environ.get("HTTP_AUTHORIZATION"), items, False)


__all__ = ["DECLINED", "MAX_SECRET", "REVOKE_ACCESS_TOKEN", "RevocationMiddleware", "try_revoke_access_token"]
