"""A fast path for the common RFC 7009 request: a confidential client revoking one of its own
live access tokens.

Client authentication (RFC 7009 §2.1, "client_secret_basic" or "client_secret_post") and the
revocation of the access token are one ``UPDATE ... WHERE ... AND EXISTS (client with this
secret hash)`` in one short transaction (a Core statement built once; SQLAlchemy caches its
compiled form): no ORM session, no ORM entity, no Authlib request objects. It runs on one of the
fast path's own connections to the engine's database, kept between calls (:class:`_Connections`):
on PostgreSQL in autocommit, so a revocation is one round trip to the server.

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
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, cast
from urllib.parse import parse_qsl

from sqlalchemy import (
    Connection,
    Engine,
    NullPool,
    QueuePool,
    Table,
    and_,
    bindparam,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

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
    """Run REVOKE_ACCESS_TOKEN in its own transaction; commit if it changed exactly one row.
    Returns the row count.

    Public SQLAlchemy API only: ``Connection.execute`` of the module-level Core statement, whose
    compiled form SQLAlchemy caches per dialect (the column types' bind processing, e.g.
    ``UTCDateTime`` for ``now``, applies as everywhere else). An earlier version ran SQL text
    precompiled through compiler internals on the DBAPI cursor; measured side by side it saved
    too little to justify depending on them (docs/performance.md, "Fast path on public API").

    The connection is one of the fast path's own (:class:`_Connections`) when the engine's pool
    allows it; otherwise a pooled one, as every other query gets it. A DBAPI error propagates
    (the middleware then lets the full endpoint answer; in the view the app's handler answers
    500)."""
    if isinstance(engine.pool, _OWN_POOLS):
        return _connections(engine).execute(engine, params)
    with engine.connect() as conn:
        count = conn.execute(REVOKE_ACCESS_TOKEN, params).rowcount
        if count == 1:
            conn.commit()
        else:
            conn.rollback()
    return int(count)


#: Pools whose connections the fast path may take for its own: ``StaticPool`` (one shared
#: connection, an in-memory SQLite database) and ``SingletonThreadPool`` (one per thread) must
#: keep theirs, so their engines use ``engine.connect()`` per call.
_OWN_POOLS = (QueuePool, NullPool)
#: Idle connections kept per engine; more in use at once are closed when given back.
MAX_IDLE_CONNECTIONS = 8


class _Connections:
    """The fast path's own connections to one engine's database, reused call after call.

    Each is opened through the engine (``engine.connect()``: its creator, ``connect_args`` and
    pool ``connect`` listeners - SQLite's pragmas - apply, and the pool pre-pings it once) and
    then detached from the pool (``Connection.detach()``): it no longer counts against
    ``pool_size``, and it is literally closed when closed. A call takes an idle one (or opens
    one), runs the statement and gives it back. What that saves per call is everything
    ``engine.connect()`` and its return cost: the pool checkout and return, and on PostgreSQL the
    pre-ping round trip (``SELECT 1``, sent as ``;``) and the switch to ``AUTOCOMMIT`` and back.

    PostgreSQL: the connections stay in ``AUTOCOMMIT``, so a call is **one round trip** (the
    ``UPDATE``; psycopg sends no ``BEGIN``/``COMMIT`` in autocommit). The same transaction
    semantics as ``BEGIN; UPDATE; COMMIT``: a single statement is atomic on its own, and it
    changes at most the one row whose unique ``token_hash`` matches (``Token.token_hash`` is
    UNIQUE), so committing a 0-row ``UPDATE`` is rolling it back. An idle connection holds no
    transaction (no snapshot, no lock). SQLite: the statement runs in its own transaction,
    committed if it changed one row and rolled back otherwise, as before; autocommit would cost
    more there (SQLAlchemy switches the isolation level with a ``PRAGMA``).

    No pre-ping per call, hence a connection the server has dropped since its last use (a
    restart, ``pg_terminate_backend``, an idle timeout) fails on the ``UPDATE``. SQLAlchemy then
    reports a disconnect (``DBAPIError.connection_invalidated``): the connection is discarded
    and the statement runs **once more on a fresh connection**. That is safe because the
    ``UPDATE`` is conditional (``revoked_at IS NULL``) and idempotent in effect: if the first
    attempt did commit before the connection was lost, the second changes no row, the fast path
    declines and the full endpoint answers 200 for the already revoked token (RFC 7009 §2.2) -
    the same answer, the token revoked once, with the first attempt's ``revoked_at``. Any other
    error discards the connection and propagates.

    Lifetime: connections are never reused across ``engine.dispose()`` (a call that finds the
    engine with a new pool closes the old pool's idle connections and opens new ones).
    :func:`close_connections` closes them at once (``oidc_logout.gunicorn_hooks.worker_exit``
    calls it when a gunicorn worker stops). ``engine.dispose()`` alone does not reach them:
    listening to SQLAlchemy's ``engine_disposed`` event would make it dispatch connection events
    on every use of that engine (measured: +4 us per statement, +17 us per checkout, for every
    query of the app), so after a bare ``dispose()`` the idle ones close at the next fast-path
    call or when the engine is garbage-collected, and at the latest when the process exits.
    At most as many are open as calls run at once (gunicorn ``gthread``: its threads per
    worker), of which :data:`MAX_IDLE_CONNECTIONS` are kept; they are outside the engine's
    ``pool_size``/``max_overflow``. In a process forked after they were opened they are
    forgotten, never used or closed (the parent's sessions)."""

    def __init__(self, engine: Engine) -> None:
        self.pool = engine.pool
        self.autocommit = engine.dialect.name == "postgresql"
        self.idle: list[Connection] = []
        self.lock = threading.Lock()
        self.closed = False

    def execute(self, engine: Engine, params: dict[str, Any]) -> int:
        try:
            conn = self.idle.pop()  # list.pop/append are atomic: no lock on the way in
        except IndexError:
            conn = self._open(engine)
        try:
            count = self._run(conn, params)
        except DBAPIError as exc:
            self._discard(conn)
            if not exc.connection_invalidated:
                raise
            # The server dropped the connection while it sat idle: once more on a fresh one
            # (pre-pinged at checkout). Safe: see the class docstring.
            conn = self._open(engine)
            try:
                count = self._run(conn, params)
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            self._discard(conn)
            raise
        self._give_back(conn)
        return count

    def _run(self, conn: Connection, params: dict[str, Any]) -> int:
        count = int(conn.execute(REVOKE_ACCESS_TOKEN, params).rowcount)
        if not self.autocommit:
            if count == 1:
                conn.commit()
            else:
                conn.rollback()
        return count

    def _open(self, engine: Engine) -> Connection:
        conn = engine.connect()
        try:
            conn.detach()
            if self.autocommit:
                # On the DBAPI connection (Dialect.set_isolation_level), not through
                # execution_options: that would register a reset with the pool entry the
                # connection has just left. Closed for good later, it needs no reset.
                dbapi_connection = conn.connection.dbapi_connection
                assert dbapi_connection is not None  # a live connection: just checked out
                engine.dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _give_back(self, conn: Connection) -> None:
        with self.lock:
            if not self.closed and len(self.idle) < MAX_IDLE_CONNECTIONS:
                self.idle.append(conn)
                return
        self._discard(conn)

    @staticmethod
    def _discard(conn: Connection) -> None:
        try:
            conn.close()
        except Exception:  # already broken: nothing left to release
            log.debug("closing a revocation fast path connection failed", exc_info=True)

    def close(self) -> None:
        """Close the idle connections; those in use close when given back."""
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
        for conn in idle:
            self._discard(conn)

    def forget(self) -> None:
        """After ``fork``: drop every connection unused and unclosed (the parent's)."""
        _inherited.extend(self.idle)  # kept referenced: no finalizer runs on them here
        self.idle = []
        self.closed = True


_registry: weakref.WeakKeyDictionary[Engine, _Connections] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()
_inherited: list[Connection] = []


def _connections(engine: Engine) -> _Connections:
    found = _registry.get(engine)
    if found is not None and found.pool is engine.pool:
        return found
    with _registry_lock:
        found = _registry.get(engine)
        if found is None or found.pool is not engine.pool:
            if found is not None:  # engine.dispose() since: never reuse across it
                found.close()
            found = _registry[engine] = _Connections(engine)
    return found


def close_connections(engine: Engine) -> None:
    """Close the revocation fast path's own connections to ``engine``'s database (idle ones at
    once, any in use when their call ends). Call it with ``engine.dispose()`` when the app
    stops; the fast path opens new ones if it is called again."""
    with _registry_lock:
        found = _registry.pop(engine, None)
    if found is not None:
        found.close()


def _forget_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for found in list(_registry.values()):
        found.lock = threading.Lock()
        found.forget()
    _registry.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


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


__all__ = [
    "DECLINED",
    "MAX_IDLE_CONNECTIONS",
    "MAX_SECRET",
    "REVOKE_ACCESS_TOKEN",
    "RevocationMiddleware",
    "close_connections",
    "try_revoke_access_token",
]
