"""The opt-in WSGI revocation fast path (oidc_logout/flask/fastpath.py): the host app's request
hooks run for every revocation unless the app opted in, and with the opt-in they are skipped only
for the revocations the middleware answers itself; everything else reaches Flask intact.

A host Flask app with its own hooks and the extension in turnkey mode, served on loopback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from flask import Flask, request
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from oidc_logout.clients import load_clients
from oidc_logout.config import Settings
from oidc_logout.demo.users import DemoUsers
from oidc_logout.flask.fastpath import install_wsgi_fast_path
from oidc_logout.op import OIDCLogout
from oidc_logout.provider import Provider
from oidc_logout.rfc7009.fastpath import RevocationMiddleware
from oidc_logout.storage.base import utcnow
from oidc_logout.storage.models import Grant, Token
from oidc_logout.tokens import new_id, new_token, token_hash
from tests.support.idp import client_meta
from tests.support.servers import LiveServer

RS = client_meta("wsgi-fast", grant_types=["client_credentials"], response_types=[], redirect_uris=[])
OTHER = client_meta(
    "wsgi-other",
    secret="other-" + "o" * 30,
    grant_types=["client_credentials"],
    response_types=[],
    redirect_uris=[],
)
AUTH = (RS["client_id"], RS["client_secret"])


@dataclass
class Host:
    url: str
    provider: Provider
    #: (path, what) of every request the host's hooks saw: "before", "after", "teardown".
    seen: list[tuple[str, str]] = field(default_factory=list)

    def hooks_saw(self, path: str) -> list[str]:
        return [what for p, what in self.seen if p == path]

    def token(self, client_id: str = RS["client_id"], kind: str = "access_token") -> str:
        """A live token of ``client_id``, stored as the token endpoint stores one."""
        value = new_token()
        with self.provider.session_factory.begin() as db:
            grant = Grant(id=new_id(16), client_id=client_id, grant_type="client_credentials", scope="")
            db.add(grant)
            db.flush()
            db.add(
                Token(
                    token_hash=token_hash(value),
                    kind=kind,
                    grant_id=grant.id,
                    client_id=client_id,
                    scope="",
                    expires_at=utcnow() + dt.timedelta(hours=1),
                )
            )
        return value

    def revoked(self, value: str) -> bool:
        with self.provider.session_factory() as db:
            row = db.scalar(select(Token).where(Token.token_hash == token_hash(value)))
            assert row is not None
            return row.revoked_at is not None

    def revoke(self, path: str = "/revoke", **kw: object) -> requests.Response:
        kw.setdefault("auth", AUTH)
        return requests.post(f"{self.url}{path}", timeout=10, **kw)  # type: ignore[arg-type]


def _serve(database_url: str, *, opt_in: bool, prefix: str = "", **overrides: object) -> Iterator[Host]:
    server = LiveServer()
    settings = Settings(
        issuer=server.url, database_url=database_url, dev_mode=True, expiry_sweep_interval=0, **overrides
    )
    provider = Provider(settings, DemoUsers("wonderland"))
    provider.setup()
    load_clients(provider, [RS, OTHER])
    app = Flask("host_with_hooks")
    app.secret_key = "host-secret"
    host = Host(server.url, provider)

    @app.before_request
    def before() -> None:
        host.seen.append((request.path, "before"))

    @app.after_request
    def after(resp: BaseResponse) -> BaseResponse:
        host.seen.append((request.path, "after"))
        return resp

    @app.teardown_request
    def teardown(_exc: BaseException | None) -> None:
        host.seen.append((request.path, "teardown"))

    OIDCLogout(app, provider=provider, start_background=False, url_prefix=prefix or None)
    if opt_in:
        assert install_wsgi_fast_path(app) is True
    server.app = app
    server.start()
    try:
        yield host
    finally:
        server.stop()
        provider.engine.dispose()


@pytest.fixture
def plain(database_url: str) -> Iterator[Host]:
    yield from _serve(database_url, opt_in=False)


@pytest.fixture
def opted_in(database_url: str) -> Iterator[Host]:
    yield from _serve(database_url, opt_in=True)


def test_without_the_opt_in_the_hosts_hooks_see_every_revocation(plain: Host) -> None:
    """The default (the fast path inside the Flask view) keeps the host's hooks."""
    token = plain.token()
    resp = plain.revoke(data={"token": token, "token_type_hint": "access_token"})
    assert resp.status_code == 200 and resp.json() == {}
    assert plain.revoked(token)
    assert plain.hooks_saw("/revoke") == ["before", "after", "teardown"]


def test_opt_in_answers_own_access_token_revocation_before_flask(opted_in: Host) -> None:
    """RFC 7009 §2.1/§2.2 by the middleware: revoked, 200 ``{}`` with the route's headers; the
    host's hooks did not run (the documented trade-off of the opt-in)."""
    token = opted_in.token()
    resp = opted_in.revoke(data={"token": token, "token_type_hint": "access_token"})
    assert resp.status_code == 200 and resp.content == b"{}"
    assert opted_in.revoked(token)
    assert opted_in.hooks_saw("/revoke") == []
    for name, value in (
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("Pragma", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
    ):
        assert resp.headers[name] == value


def test_opt_in_answer_is_the_full_paths_answer(opted_in: Host) -> None:
    """Same status, body and headers as the Flask route's answer to the same revocation
    (RFC 7009 §2.2: an already revoked token is answered 200 too, by the full path)."""
    token = opted_in.token()
    quick = opted_in.revoke(data={"token": token})
    full = opted_in.revoke(data={"token": token})
    assert opted_in.hooks_saw("/revoke") == ["before", "after", "teardown"]  # the second only
    assert (quick.status_code, quick.content) == (full.status_code, full.content) == (200, b"{}")
    for name in ("Content-Type", "Cache-Control", "Pragma", "X-Content-Type-Options", "X-Frame-Options"):
        assert quick.headers[name] == full.headers[name]


def test_declined_requests_reach_flask_with_their_body_and_the_hosts_hooks(opted_in: Host) -> None:
    """Everything the fast path declines is the full endpoint's, with the body the client sent:
    a refresh token takes its grant (RFC 7009 §2.1), another client's token is invalid_grant,
    a wrong secret invalid_client (RFC 6749 §5.2) - and the host's hooks ran for each."""
    refresh = opted_in.token(kind="refresh_token")
    resp = opted_in.revoke(data={"token": refresh, "token_type_hint": "refresh_token"})
    assert resp.status_code == 200 and opted_in.revoked(refresh)
    with opted_in.provider.session_factory() as db:
        row = db.scalar(select(Token).where(Token.token_hash == token_hash(refresh)))
        assert row is not None and db.get(Grant, row.grant_id).revoked_at is not None  # type: ignore[union-attr]

    foreign = opted_in.token(client_id=OTHER["client_id"])
    resp = opted_in.revoke(data={"token": foreign})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert not opted_in.revoked(foreign)

    mine = opted_in.token()
    resp = opted_in.revoke(data={"token": mine}, auth=(RS["client_id"], "wrong-" + "w" * 30))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert not opted_in.revoked(mine)

    assert opted_in.hooks_saw("/revoke") == ["before", "after", "teardown"] * 3


def test_requests_outside_the_plain_case_are_not_read_by_the_middleware(opted_in: Host) -> None:
    """Query string, other content types, a non-ASCII or badly escaped body: Flask answers
    exactly as without the opt-in (the full endpoint revokes or refuses)."""
    token = opted_in.token()
    resp = opted_in.revoke(data={"token": token}, params={"x": "1"})
    assert resp.status_code == 200 and opted_in.revoked(token)

    resp = opted_in.revoke(json={"token": opted_in.token()})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"

    token = opted_in.token()
    body = f"token={token}&token_type_hint=%ff".encode()
    resp = opted_in.revoke(data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200 and opted_in.revoked(token)  # the full path ignores the bad hint

    resp = opted_in.revoke(
        data="token=caf\u00e9".encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 200  # §2.2: an unknown token is not an error
    assert opted_in.hooks_saw("/revoke") == ["before", "after", "teardown"] * 4


def test_body_over_the_limit_is_refused_by_flask_as_without_the_opt_in(database_url: str) -> None:
    """The route's body limit (max_request_bytes, 413) holds behind the middleware."""
    for host in _serve(database_url, opt_in=True, max_request_bytes=256):
        token = host.token()
        resp = host.revoke(data={"token": token, "token_type_hint": "access_token", "pad": "p" * 300})
        assert resp.status_code == 413
        assert not host.revoked(token)
        assert host.revoke(data={"token": token}).status_code == 200
        assert host.revoked(token)


def test_opt_in_follows_the_url_prefix(database_url: str) -> None:
    """The middleware answers the extension's own revocation URL, wherever it is mounted."""
    for host in _serve(database_url, opt_in=True, prefix="/op"):
        token = host.token()
        resp = host.revoke("/op/revoke", data={"token": token})
        assert resp.status_code == 200 and host.revoked(token)
        assert host.hooks_saw("/op/revoke") == []
        assert host.revoke("/revoke", data={"token": host.token()}).status_code == 404


def test_bundled_op_answers_revocations_before_flask(database_url: str) -> None:
    """The demo IdP (the bundled OP of ``oidc-logout serve``) answers revocations before Flask;
    its own hooks are the route's, which the middleware reproduces."""
    from oidc_logout.demo.idp import create_idp_app

    settings = Settings(
        issuer="http://127.0.0.1:9", database_url=database_url, dev_mode=True, expiry_sweep_interval=0
    )
    app = create_idp_app(settings, start_background=False)
    assert isinstance(app.wsgi_app, RevocationMiddleware)
    app.extensions["oidc_logout"].provider.engine.dispose()
