"""The revocation fast path (oidc_logout/rfc7009/fastpath.py): one Core UPDATE for a confidential
client revoking its own live access token, and the full Authlib endpoint for everything else.

These tests pin down which requests the fast path takes, that what it does is what the full
path would have done (RFC 7009 §2.1, §2.2), and that every other request still gets the full
path's answer (the spec tests in test_revocation.py and test_bad_input.py run through the same
view, so they cover the fallback's errors)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from authlib.integrations.flask_oauth2.signals import token_revoked
from sqlalchemy import select, update

from oidc_logout.rfc7009 import fastpath
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import Client, Grant, Token
from oidc_logout.tokens import new_id, new_token, token_hash
from tests.support.idp import (
    Browser,
    IdP,
    authorize,
    client_meta,
    introspect,
    revoke,
    start_idp,
)

RP_A = client_meta("fast-a")
RP_B = client_meta("fast-b", secret="other-secret-" + "y" * 20)
PUBLIC = client_meta("fast-pub", secret=None)
POST_ONLY = client_meta(
    "fast-post", secret="post-secret-" + "p" * 20, token_endpoint_auth_method="client_secret_post"
)


@pytest.fixture(scope="module")
def idp(module_database_url: str) -> Iterator[IdP]:
    server = start_idp(module_database_url, clients=[RP_A, RP_B, PUBLIC, POST_ONLY])
    yield server
    server.stop()


def _tokens(idp: IdP, meta: dict, scope: str = "openid offline_access") -> dict:
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    return authorize(browser, meta, scope=scope)


def _post(idp: IdP, data: Any, auth: tuple[str, str] | None = None, **kw: Any) -> requests.Response:
    return requests.post(f"{idp.url}/revoke", data=data, auth=auth, timeout=10, **kw)


def _row(idp: IdP, token: str) -> Token:
    with idp.provider.session_factory() as db:
        row = db.scalar(select(Token).where(Token.token_hash == token_hash(token)))
        assert row is not None
        return row


def _active(idp: IdP, token: str) -> bool:
    return introspect(idp.url, RP_A, token)["active"]


def _basic(raw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


# -- what the fast path does ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_fast_path_revokes_own_access_token_and_introspection_sees_it(idp, fast, method):
    """RFC 7009 §2.1 (client authenticates, token issued to it) and §2.2 (200): the fast path
    revokes exactly the presented access token; the refresh token of the grant stays (§2.1 MAY)."""
    tokens = _tokens(idp, RP_A)
    before = utcnow()
    if method == "client_secret_basic":
        resp = revoke(idp.url, RP_A, tokens["access_token"], hint="access_token")
    else:
        resp = _post(
            idp,
            {
                "token": tokens["access_token"],
                "client_id": RP_A["client_id"],
                "client_secret": RP_A["client_secret"],
            },
        )
    assert fast == [True]
    assert resp.status_code == 200
    assert resp.json() == {}
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Pragma"] == "no-cache"
    row = _row(idp, tokens["access_token"])
    assert row.revoked_at is not None and before - dt.timedelta(seconds=5) <= row.revoked_at <= utcnow()
    assert row.revoked_reason == "revoked by its client (RFC 7009)"
    assert introspect(idp.url, RP_A, tokens["access_token"]) == {"active": False}
    assert _active(idp, tokens["refresh_token"])
    userinfo = requests.get(
        f"{idp.url}/userinfo", timeout=10, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.status_code == 401


def test_fast_path_answer_is_the_full_paths_answer(idp, fast):
    """The same 200 response whichever path answers (RFC 7009 §2.2)."""
    tokens = _tokens(idp, RP_A)
    quick = revoke(idp.url, RP_A, tokens["access_token"])
    full = revoke(idp.url, RP_A, tokens["access_token"])  # already revoked: the full path
    assert fast == [True, False]
    assert (quick.status_code, quick.content) == (full.status_code, full.content)
    for name in ("Content-Type", "Cache-Control", "Pragma"):
        assert quick.headers[name] == full.headers[name]
    assert _row(idp, tokens["access_token"]).revoked_at is not None


def test_fast_path_revokes_an_expired_access_token_like_the_full_path(idp, fast):
    """RFC 7009 §2.2: an expired token is answered with 200; both paths mark it revoked."""
    tokens = _tokens(idp, RP_A)
    with idp.provider.session_factory.begin() as db:
        db.execute(
            update(Token)
            .where(Token.token_hash == token_hash(tokens["access_token"]))
            .values(expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        )
    assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200
    assert fast == [True]
    assert _row(idp, tokens["access_token"]).revoked_at is not None


def _issue_access_token(idp: IdP, client_id: str) -> str:
    """An access token of a client_credentials grant, stored as the token endpoint stores it."""
    value = new_token()
    with idp.provider.session_factory.begin() as db:
        grant = Grant(id=new_id(16), client_id=client_id, grant_type="client_credentials", scope="")
        db.add(grant)
        db.flush()
        db.add(
            Token(
                token_hash=token_hash(value),
                kind="access_token",
                grant_id=grant.id,
                client_id=client_id,
                scope="",
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )
    return value


def test_post_only_client_may_use_basic_at_revocation(idp, fast):
    """RFC 7009 §2.1: either secret method of a confidential client is accepted here, as by
    OAuthClient.check_endpoint_auth_method on the full path."""
    token = _issue_access_token(idp, POST_ONLY["client_id"])
    assert revoke(idp.url, POST_ONLY, token).status_code == 200
    assert fast == [True]
    assert _row(idp, token).revoked_at is not None


# -- what it never does ----------------------------------------------------------------------
@pytest.mark.parametrize("secret", ["wrong-secret", "s3cret-" + "x" * 19, "s3cret-" + "x" * 21, "HASH"])
def test_wrong_secret_never_revokes(idp, fast, secret):
    """RFC 7009 §2.1 / RFC 6749 §5.2: failed client authentication is invalid_client (full path);
    the stored hash itself is no credential."""
    if secret == "HASH":
        with idp.provider.session_factory() as db:
            secret = db.get(Client, RP_A["client_id"]).client_secret_hash
    tokens = _tokens(idp, RP_A)
    resp = _post(idp, {"token": tokens["access_token"]}, auth=(RP_A["client_id"], secret))
    assert fast == [False]
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert _row(idp, tokens["access_token"]).revoked_at is None
    assert _active(idp, tokens["access_token"])


def test_secret_of_another_client_never_revokes(idp, fast):
    """RFC 7009 §2.1: the secret must be the named client's own."""
    tokens = _tokens(idp, RP_A)
    resp = _post(idp, {"token": tokens["access_token"]}, auth=(RP_A["client_id"], RP_B["client_secret"]))
    assert fast == [False]
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert _active(idp, tokens["access_token"])


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
def test_another_clients_token_never_revokes_and_gets_the_spec_error(idp, fast, kind):
    """RFC 7009 §2.1: "the authorization server ... verifies whether the token was issued to the
    client making the revocation request"; if not: invalid_grant (RFC 6749 §5.2), HTTP 400."""
    tokens = _tokens(idp, RP_A)
    resp = revoke(idp.url, RP_B, tokens[kind])
    assert fast == [False]
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"
    assert _row(idp, tokens[kind]).revoked_at is None
    assert _active(idp, tokens[kind])


def test_public_client_path_unchanged(idp, fast):
    """RFC 7009 §2.1: a public client (auth method none) sends client_id only: never the fast
    path, which needs a secret; the full path revokes as before."""
    tokens = _tokens(idp, PUBLIC, scope="openid")
    resp = _post(idp, {"token": tokens["access_token"], "client_id": PUBLIC["client_id"]})
    assert fast == [False]
    assert resp.status_code == 200
    assert _row(idp, tokens["access_token"]).revoked_at is not None


def test_public_client_with_a_made_up_secret_is_refused_as_before(idp, fast):
    """A public client has no secret: presenting one is invalid_client, and nothing is revoked."""
    tokens = _tokens(idp, PUBLIC, scope="openid")
    resp = _post(idp, {"token": tokens["access_token"]}, auth=(PUBLIC["client_id"], "anything"))
    assert fast == [False]
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert _row(idp, tokens["access_token"]).revoked_at is None


def test_refresh_token_still_takes_its_grant(idp, fast):
    """RFC 7009 §2.1: revoking a refresh token SHOULD invalidate the access tokens of the same
    grant: the fast path declines refresh tokens, the full path ends the grant."""
    tokens = _tokens(idp, RP_A)
    resp = revoke(idp.url, RP_A, tokens["refresh_token"], hint="refresh_token")
    assert fast == [False]
    assert resp.status_code == 200
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert introspect(idp.url, RP_A, token) == {"active": False}
    row = _row(idp, tokens["refresh_token"])
    with idp.provider.session_factory() as db:
        assert db.get(Grant, row.grant_id).revoked_at is not None


def test_already_revoked_and_unknown_tokens_go_the_full_path(idp, fast):
    """RFC 7009 §2.2: "invalid tokens do not cause an error response" - answered by the full path."""
    tokens = _tokens(idp, RP_A)
    first = _row(idp, tokens["access_token"])
    assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200
    revoked_at = _row(idp, tokens["access_token"]).revoked_at
    assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200
    assert revoke(idp.url, RP_A, "never-issued-" + "q" * 30).status_code == 200
    assert fast == [True, False, False]
    assert first.revoked_at is None
    assert _row(idp, tokens["access_token"]).revoked_at == revoked_at  # not stamped again


def test_id_token_still_gets_unsupported_token_type(idp, fast):
    """RFC 7009 §2.2.1: unsupported_token_type for an ID token, from the full path."""
    tokens = _tokens(idp, RP_A)
    resp = revoke(idp.url, RP_A, tokens["id_token"])
    assert fast == [False]
    assert resp.status_code == 400 and resp.json()["error"] == "unsupported_token_type"


def _unusual_requests(tokens: dict, a: dict) -> list[tuple[str, dict[str, Any]]]:
    tok = tokens["access_token"]
    cid, sec = a["client_id"], a["client_secret"]
    return [
        (
            "basic and post credentials together",
            {"data": {"token": tok, "client_id": cid, "client_secret": sec}, "auth": (cid, sec)},
        ),
        ("repeated token", {"data": [("token", tok), ("token", tok)], "auth": (cid, sec)}),
        ("parameter in the query", {"data": {"token": tok}, "auth": (cid, sec), "params": {"x": "1"}}),
        ("unknown parameter", {"data": {"token": tok, "scope": "openid"}, "auth": (cid, sec)}),
        ("unknown hint", {"data": {"token": tok, "token_type_hint": "foo"}, "auth": (cid, sec)}),
        (
            "percent-encoded Basic",
            {"data": {"token": tok}, "headers": _basic(f"{cid}:{sec.replace('-', '%2D')}")},
        ),
        (
            "lower-case scheme, extra space",
            {
                "data": {"token": tok},
                "headers": {"Authorization": "basic  " + _basic(f"{cid}:{sec}")["Authorization"].split()[1]},
            },
        ),
    ]


@pytest.mark.parametrize("case", range(7))
def test_unusual_but_valid_requests_go_the_full_path(idp, fast, case):
    """Anything but the plain case is declined by the fast path (nothing changed there) and
    answered by the full endpoint exactly as before."""
    tokens = _tokens(idp, RP_A)
    name, kw = _unusual_requests(tokens, RP_A)[case]
    with requests.Session() as http:
        resp = http.post(f"{idp.url}/revoke", timeout=10, **kw)
    assert fast == [False], name
    assert resp.status_code in (200, 400, 401), name
    if resp.status_code == 200:
        assert resp.json() == {}
    else:
        assert resp.json()["error"] in ("invalid_request", "invalid_client"), name


def test_token_revoked_signal_listeners_get_the_full_path(idp, fast):
    """Authlib's token_revoked signal carries the ORM token: with a listener, no fast path."""
    got: list[Any] = []

    def listener(sender: Any, **kw: Any) -> None:
        got.append(kw["token"].token_hash)

    token_revoked.connect(listener)
    try:
        tokens = _tokens(idp, RP_A)
        assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200
    finally:
        token_revoked.disconnect(listener)
    assert fast == []
    assert got == [token_hash(tokens["access_token"])]
    assert not _active(idp, tokens["access_token"])


# -- the function itself -------------------------------------------------------------------
def test_declines_without_touching_the_database_on_malformed_input(idp, monkeypatch):
    """The checks before the UPDATE: each of these is declined with no statement run."""
    engine = idp.provider.engine
    good = _basic(f"{RP_A['client_id']}:{RP_A['client_secret']}")["Authorization"]
    cases: list[tuple[str | None, list[tuple[str, str]], bool]] = [
        (good, [], False),  # no token (§2.1 REQUIRED)
        (good, [("token", "")], False),
        (good, [("token", "x" * 4097)], False),
        (good, [("token", "t")], True),  # query string
        ("Basic !!!", [("token", "t")], False),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), [("token", "t")], False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), [("token", "t")], False),
        ("Basic " + base64.b64encode(b":secret").decode(), [("token", "t")], False),
        ("Basic " + base64.b64encode(b"id:").decode(), [("token", "t")], False),
        ("Basic " + base64.b64encode(b"bad\x00id:secret").decode(), [("token", "t")], False),
        ("Bearer abc", [("token", "t")], False),
        (None, [("token", "t"), ("client_id", "fast-a")], False),  # no secret: not ours
        (None, [("token", "t"), ("client_id", "x" * 65), ("client_secret", "s")], False),
    ]
    executed: list[Any] = []
    monkeypatch.setattr(fastpath, "_execute", lambda *a: executed.append(a) or 0)
    for auth, form, query in cases:
        assert fastpath.try_revoke_access_token(engine, auth, form, query) is False
    assert executed == []
    monkeypatch.undo()
    # and the plain case does reach the statement (here: an unknown token, so no row)
    assert fastpath.try_revoke_access_token(engine, good, [("token", "never-issued")], False) is False


def test_revoked_at_is_stored_as_the_orm_stores_it(idp, fast):
    """The fast path's statement applies the column type's own bind processing (UTCDateTime): the
    stored value is what the ORM path writes and reads back as an aware UTC datetime."""
    got: list[Any] = []
    tokens = _tokens(idp, RP_A)
    other = _tokens(idp, RP_A)
    assert revoke(idp.url, RP_A, tokens["access_token"]).status_code == 200  # fast path

    def listener(sender: Any, **kw: Any) -> None:
        got.append(kw["token"])

    token_revoked.connect(listener)
    try:
        assert revoke(idp.url, RP_A, other["access_token"]).status_code == 200  # ORM path
    finally:
        token_revoked.disconnect(listener)
    assert fast == [True] and len(got) == 1
    fast_row, orm_row = _row(idp, tokens["access_token"]), _row(idp, other["access_token"])
    assert fast_row.revoked_at.tzinfo is not None and orm_row.revoked_at.tzinfo is not None
    assert abs(fast_row.revoked_at - orm_row.revoked_at) < dt.timedelta(seconds=30)
    assert fast_row.revoked_reason == orm_row.revoked_reason
    if idp.provider.engine.dialect.name == "sqlite":  # PostgreSQL stores a timestamptz
        with idp.provider.engine.connect() as conn:
            raw = [
                conn.exec_driver_sql(
                    "SELECT revoked_at FROM oidc_logout_token WHERE token_hash = ?", (token_hash(t),)
                ).scalar()
                for t in (tokens["access_token"], other["access_token"])
            ]
        for value in raw:  # the same text SQLAlchemy's SQLite DATETIME writes
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", value), raw
