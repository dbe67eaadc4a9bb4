"""Turnkey mode is the extension applied to the package's own small Authlib server: one
install sequence for the host's server and the package's own, and one way a termination
revokes tokens (the token stores of its engine), whichever mode issued them (issue 11 item 4).

A :class:`RecordingStore` (a real store over a Python list, not a mock of any peer) registered
for the engine shows what scope every termination hands the stores."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.sqla_oauth2 import OAuth2TokenMixin
from flask import Flask
from sqlalchemy import Integer, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker

from oidc_logout.chunks import run_pending
from oidc_logout.demo.users import DemoUsers
from oidc_logout.flask.host import HostEndSessionEndpoint, HostIntrospectionEndpoint
from oidc_logout.flask.host_revocation import HostRevocationEndpoint
from oidc_logout.flask.install import Installation
from oidc_logout.flask.install import install as real_install
from oidc_logout.flask.server import OPServer
from oidc_logout.host import HostTokenStore
from oidc_logout.op import OIDCLogout, by_client, by_grant, by_sid, by_subject, start_session, terminate
from oidc_logout.rfc7009.endpoint import RevocationEndpoint
from oidc_logout.rfc7662.endpoint import IntrospectionEndpoint
from oidc_logout.rpinitiated.end_session import EndSessionEndpoint
from oidc_logout.storage.models import Grant, OPSession, Token
from oidc_logout.storage.own_tokens import OwnTokenStore
from oidc_logout.storage.schema import make_engine
from oidc_logout.termination import RUNNING
from oidc_logout.token_stores import register_token_store, token_stores_for, unregister_token_store
from tests.support.idp import PASSWORD, Browser, IdP, authorize, client_meta, introspect, start_idp


class HostBase(DeclarativeBase):
    pass


class OneCodePathToken(HostBase, OAuth2TokenMixin):  # type: ignore[misc]
    __tablename__ = "host_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(Integer)


class RecordingStore:
    """A token store (with grants) whose tokens are a list: records every scope it is handed.
    ``grants`` are (grant id, client_id) it owns, for the grant-scoped paths."""

    def __init__(self, grants: Sequence[tuple[str, str]] = ()) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.grants = dict(grants)

    def revoke_for_sessions(
        self, db: Session, sids: Sequence[str], *, include_offline: bool, now: dt.datetime, reason: str
    ) -> int:
        self.calls.append(("sessions", tuple(sids), include_offline, reason))
        return 0

    def revoke_for_subject(
        self, db: Session, subject: str, *, include_offline: bool, now: dt.datetime, reason: str
    ) -> int:
        self.calls.append(("subject", subject, include_offline, reason))
        return 0

    def revoke_for_client(self, db: Session, client_id: str, *, now: dt.datetime, reason: str) -> int:
        self.calls.append(("client", client_id, reason))
        return 0

    def has_grant(self, db: Session, grant_id: str) -> bool:
        return grant_id in self.grants

    def revoke_grants(self, db: Session, grant_ids: Sequence[str], *, now: dt.datetime, reason: str) -> int:
        self.calls.append(("grants", tuple(grant_ids), reason))
        return sum(1 for g in grant_ids if self.grants.pop(g, None) is not None)

    def walk_grants(
        self,
        db: Session,
        client_id: str,
        *,
        after: str,
        limit: int,
        created_before: dt.datetime | None = None,
        below_version: int | None = None,
    ) -> list[tuple[str, str | None]]:
        mine = sorted(g for g, c in self.grants.items() if c == client_id and g > after)
        return [(g, None) for g in mine[:limit]]


# -- the two modes ----------------------------------------------------------------------------
@pytest.fixture
def turnkey(database_url: str) -> Iterator[IdP]:
    """The bundled OP (``make demo``'s app) on a loopback port."""
    idp = start_idp(database_url, clients=[client_meta("rp-a", port=20001)], termination_chunk_budget=0)
    yield idp
    idp.stop()


Host = tuple[Flask, scoped_session[Session], AuthorizationServer]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    """An Authlib IdP of its own (plain SQLAlchemy), with the extension applied to its server."""
    engine = create_engine(f"sqlite:///{tmp_path / 'host.db'}")
    HostBase.metadata.create_all(engine)
    sessions = scoped_session(sessionmaker(engine))
    app = Flask("one_code_path_host")
    app.secret_key = "host-secret"
    app.config.update(OIDC_LOGOUT_ISSUER="https://idp.example", OIDC_LOGOUT_EMBEDDED_DISPATCHER=False)
    app.teardown_appcontext(lambda _exc: sessions.remove())
    server = AuthorizationServer(app, query_client=lambda cid: None, save_token=lambda t, r: None)
    OIDCLogout(app, server=server, token_model=OneCodePathToken, db=sessions, start_background=False)
    yield app, sessions, server
    app.extensions["oidc_logout"].provider.stop_background()
    sessions.remove()
    engine.dispose()


@contextmanager
def recording(engine: Any, grants: Sequence[tuple[str, str]] = ()) -> Iterator[RecordingStore]:
    store = RecordingStore(grants)
    register_token_store(engine, store)
    try:
        yield store
    finally:
        unregister_token_store(engine, store)


# -- one install sequence ---------------------------------------------------------------------
def test_the_packages_own_server_registers_none_of_the_extensions_endpoints_itself(tmp_path: Path) -> None:
    """OPServer is grants and a token generator only; the endpoints come from init_app."""
    app = Flask("turnkey")
    app.secret_key = "k"
    app.config.update(
        OIDC_LOGOUT_ISSUER="https://op.example",
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'op.db'}",
        OIDC_LOGOUT_DEV_MODE=True,
    )
    ext = OIDCLogout(app, users=DemoUsers(PASSWORD), start_background=False)
    assert ext.provider is not None
    try:
        bare = OPServer(ext.provider)
        assert bare._endpoints == {}
        installed = app.extensions["oidc_logout"].server
        assert isinstance(installed, OPServer)
        assert {name: [type(e) for e in endpoints] for name, endpoints in installed._endpoints.items()} == {
            "end_session": [EndSessionEndpoint],
            "introspection": [IntrospectionEndpoint],
            "revocation": [RevocationEndpoint],
        }
        assert all(e.server is installed for es in installed._endpoints.values() for e in es)
    finally:
        ext.provider.engine.dispose()


def test_init_app_runs_the_same_install_on_the_hosts_server_and_on_the_packages_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both modes go through one ``install(provider, Installation)``: the endpoints land on the
    server it was given (the host's, or a new OPServer), the token store on the engine."""
    seen: list[Installation] = []

    def recording_install(provider: Any, installation: Installation) -> None:
        seen.append(installation)
        real_install(provider, installation)

    monkeypatch.setattr("oidc_logout.flask.extension.install", recording_install)

    turnkey_app = Flask("turnkey")
    turnkey_app.secret_key = "k"
    turnkey_app.config.update(
        OIDC_LOGOUT_ISSUER="https://op.example",
        OIDC_LOGOUT_DATABASE_URL=f"sqlite:///{tmp_path / 'op.db'}",
        OIDC_LOGOUT_DEV_MODE=True,
    )
    turnkey_ext = OIDCLogout(turnkey_app, users=DemoUsers(PASSWORD), start_background=False)

    engine = create_engine(f"sqlite:///{tmp_path / 'host.db'}")
    HostBase.metadata.create_all(engine)
    sessions = scoped_session(sessionmaker(engine))
    host_app = Flask("host")
    host_app.secret_key = "k"
    host_app.config.update(OIDC_LOGOUT_ISSUER="https://idp.example", OIDC_LOGOUT_EMBEDDED_DISPATCHER=False)
    host_server = AuthorizationServer(host_app, query_client=lambda cid: None, save_token=lambda t, r: None)
    host_ext = OIDCLogout(
        host_app, server=host_server, token_model=OneCodePathToken, db=sessions, start_background=False
    )
    try:
        own_target, host_target = seen
        own = turnkey_app.extensions["oidc_logout"].server
        assert own_target.server is own and own_target.context is own
        assert isinstance(own_target.token_store, OwnTokenStore)
        assert host_target.server is host_server
        assert host_target.context is host_app.extensions["oidc_logout"].server
        assert host_target.token_store == HostTokenStore(OneCodePathToken)

        # The endpoint instances it was given are the ones registered on each server.
        for target in seen:
            registered = [e for es in target.server._endpoints.values() for e in es]
            assert registered == list(target.endpoints)
        assert {type(e) for e in host_target.endpoints} == {
            HostEndSessionEndpoint,
            HostIntrospectionEndpoint,
            HostRevocationEndpoint,
        }
        with host_app.app_context():
            # Our endpoints on the host's server see the extension's context as their server.
            assert all(e.server is host_target.context for e in host_target.endpoints)
            stores = token_stores_for(sessions())
        assert HostTokenStore(OneCodePathToken) in stores and OwnTokenStore() in stores
    finally:
        assert turnkey_ext.provider is not None and host_ext.provider is not None
        turnkey_ext.provider.engine.dispose()
        sessions.remove()
        engine.dispose()


# -- one way to revoke ----------------------------------------------------------------------------
def test_a_turnkey_subject_termination_hands_every_store_the_scope_a_hosts_does(
    turnkey: IdP, host: Host
) -> None:
    """Subject termination in both modes: each registered store gets the subject in the
    cut-off's transaction and then the ended session; the turnkey's own tokens (the own
    store) are revoked on the way."""
    browser = Browser(turnkey.url)
    browser.login("alice")
    meta = client_meta("rp-a", port=20001)
    tokens = authorize(browser, meta, scope="openid")
    provider = turnkey.provider
    with provider.session_factory() as db:
        sid = db.scalar(select(OPSession.sid).where(OPSession.subject == "alice"))
    assert sid is not None

    with recording(provider.engine) as turnkey_store:
        outcome = provider.terminate_now(by_subject("alice"), reason="offboarded", initiator="test", wait=0)
    assert turnkey_store.calls == [
        ("subject", "alice", False, "offboarded"),
        ("sessions", (sid,), False, "offboarded"),
    ]
    with provider.session_factory() as db:
        revoked = db.scalars(select(Token.revoked_reason).where(Token.sid == sid)).all()
    assert revoked and set(revoked) == {"offboarded"}  # the own store marked them
    assert introspect(turnkey.url, meta, tokens["access_token"]) == {"active": False}
    assert outcome.termination_id

    app, sessions, _server = host
    with app.app_context():
        db = sessions()
        db.add(
            OneCodePathToken(
                client_id="c1",
                token_type="Bearer",
                access_token=f"at-{time.monotonic_ns()}",
                scope="openid",
                issued_at=int(time.time()),
                expires_in=3600,
                user_id=7,
            )
        )
        host_sid = start_session(db, "7").session.sid
        db.commit()
        with recording(db.get_bind()) as host_store:
            host_revoked = terminate(
                db, by_subject("7"), reason="offboarded", initiator="test"
            ).tokens_revoked
            db.commit()
    assert host_revoked == 1  # the host's token row, through HostTokenStore
    assert host_store.calls == [
        ("subject", "7", False, "offboarded"),
        ("sessions", (host_sid,), False, "offboarded"),
    ]


def test_a_termination_outside_flask_revokes_the_turnkey_tokens_through_the_own_store(turnkey: IdP) -> None:
    """A process that builds no Provider and no app (``oidc-logout worker``, a script) on its
    own engine: the package's own tokens are revoked, no registration needed."""
    browser = Browser(turnkey.url)
    browser.login("alice")
    meta = client_meta("rp-a", port=20001)
    tokens = authorize(browser, meta, scope="openid")
    with turnkey.provider.session_factory() as db:
        sid = db.scalar(select(OPSession.sid).where(OPSession.subject == "alice"))
    assert sid is not None
    engine = make_engine(turnkey.settings.database_url)
    try:
        with sessionmaker(engine).begin() as db:
            assert token_stores_for(db) == (OwnTokenStore(),)
            # A session termination: no cut-off, so only the revocation can end the tokens.
            term = terminate(db, by_sid(sid), reason="script", initiator="test")
            assert term.tokens_revoked == 2  # the grant's refresh token and the access token
    finally:
        engine.dispose()
    assert introspect(turnkey.url, meta, tokens["access_token"]) == {"active": False}
    assert introspect(turnkey.url, meta, tokens["refresh_token"]) == {"active": False}


def test_grant_scoped_terminations_reach_every_store_with_grants(turnkey: IdP) -> None:
    """A termination by grant asks every store with grants; a chunked client kill switch
    walks the grants of all of them (merged in id order) and revokes each in its own store."""
    browser = Browser(turnkey.url)
    browser.login("alice")
    meta = client_meta("rp-a", port=20001)
    authorize(browser, meta, scope="openid")
    provider = turnkey.provider
    with provider.session_factory() as db:
        own_grant = db.scalar(select(Grant.id).where(Grant.client_id == "rp-a"))
    assert own_grant is not None

    outside = [("g-" + "0" * 20, "rp-a"), ("z-" + "9" * 20, "rp-a"), ("x-other", "rp-b")]
    with recording(provider.engine, outside) as store:
        # By grant: an id only the recording store knows is no NotFound and reaches it.
        provider.terminate_now(by_grant(outside[2][0]), reason="one grant", initiator="test", wait=0)
        assert store.calls[-1:] == [("grants", (outside[2][0],), "one grant")]

        with provider.session_factory.begin() as db:
            term = terminate(db, by_client("rp-a"), reason="kill", initiator="test", inline_limit=0)
            assert term.state == RUNNING
            assert store.calls[-1:] == [("client", "rp-a", "kill")]  # at the cut-off's commit
        run_pending(provider.session_factory, size=2)
        handed = [g for call in store.calls if call[0] == "grants" and call[2] == "kill" for g in call[1]]
    assert handed == sorted([own_grant, outside[0][0], outside[1][0]])  # one walk over both stores
    assert store.grants == {}  # both of its grants of rp-a revoked, and the by_grant one
    with provider.session_factory() as db:
        assert db.scalar(select(Grant.revoked_reason).where(Grant.id == own_grant)) == "kill"
