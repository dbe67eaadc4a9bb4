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
from collections.abc import Iterable
from typing import Any, cast

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
    A DBAPI error propagates (the app's handler answers 500); the pool invalidates a broken
    connection."""
    with engine.connect() as conn:
        count = conn.execute(REVOKE_ACCESS_TOKEN, params).rowcount
        if count == 1:
            conn.commit()
        else:
            conn.rollback()
    return count


__all__ = ["MAX_SECRET", "REVOKE_ACCESS_TOKEN", "try_revoke_access_token"]
