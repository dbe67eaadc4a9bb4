"""Extension mode over a host with plain SQLAlchemy (no Flask-SQLAlchemy): ``db=`` is a
callable returning the host's session; the extension's tables are created in the host's
database and a termination revokes the host's token rows in the host's transaction."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.sqla_oauth2 import OAuth2TokenMixin
from flask import Flask
from sqlalchemy import Integer, create_engine, inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker

from oidc_logout.op import OIDCLogout, by_subject, start_session, terminate
from oidc_logout.storage.models import OPSession, Termination


class HostBase(DeclarativeBase):
    pass


class HostToken(HostBase, OAuth2TokenMixin):  # type: ignore[misc]
    __tablename__ = "host_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(Integer)


@pytest.fixture
def host(database_url: str) -> Iterator[tuple[Flask, scoped_session[Session]]]:
    engine = create_engine(database_url)
    HostBase.metadata.create_all(engine)
    sessions = scoped_session(sessionmaker(engine))
    app = Flask("plain_sqlalchemy_host")
    app.secret_key = "host-secret"
    app.config.update(OIDC_LOGOUT_ISSUER="https://idp.example", OIDC_LOGOUT_EMBEDDED_DISPATCHER=False)
    app.teardown_appcontext(lambda _exc: sessions.remove())
    server = AuthorizationServer(app, query_client=lambda cid: None, save_token=lambda t, r: None)
    OIDCLogout(app, server=server, token_model=HostToken, db=sessions, start_background=False)
    yield app, sessions
    app.extensions["oidc_logout"].provider.stop_background()
    sessions.remove()
    engine.dispose()


def _token(db: Session, user_id: int) -> HostToken:
    row = HostToken(
        client_id="c1",
        token_type="Bearer",
        access_token=f"at-{user_id}-{time.monotonic_ns()}",
        refresh_token=f"rt-{user_id}-{time.monotonic_ns()}",
        scope="openid",
        issued_at=int(time.time()),
        expires_in=3600,
        user_id=user_id,
    )
    db.add(row)
    db.commit()
    return row


def test_extension_mode_needs_the_server_the_token_model_and_the_database_together() -> None:
    with pytest.raises(TypeError, match="server=, token_model= and db="):
        OIDCLogout(server=AuthorizationServer(), token_model=HostToken)


def test_the_extensions_tables_live_in_the_hosts_database_and_the_hosts_are_untouched(host: Any) -> None:
    app, sessions = host
    with app.app_context():
        names = set(inspect(sessions().get_bind()).get_table_names())
    assert {
        "host_token",
        "oidc_logout_token_session",
        "oidc_logout_op_session",
        "oidc_logout_termination",
    } <= names
    assert all(n == "host_token" or n.startswith("oidc_logout_") for n in names)  # only ours are added
    columns = {c["name"] for c in inspect(sessions().get_bind()).get_columns("host_token")}
    assert "sid" not in columns  # the host's table is not changed


def test_subject_termination_in_the_hosts_session_revokes_its_tokens_or_nothing(host: Any) -> None:
    app, sessions = host
    with app.app_context():
        db = sessions()
        mine, other = _token(db, 7), _token(db, 8)
        start_session(db, "7")
        db.commit()
        terminate(db, by_subject("7"), reason="disabled", initiator="test")
        db.rollback()
        db.expire_all()
        assert mine.access_token_revoked_at == 0 and mine.refresh_token_revoked_at == 0
        assert db.scalar(select(Termination.id)) is None
        assert db.scalar(select(OPSession.ended_at)) is None

        term = terminate(db, by_subject("7"), reason="disabled", initiator="test")
        db.commit()
        db.expire_all()
        assert term.tokens_revoked == 1 and term.sessions_ended == 1
        assert mine.access_token_revoked_at > 0 and mine.refresh_token_revoked_at > 0
        assert other.access_token_revoked_at == 0  # another user's token lives on


def test_a_host_serves_the_ssf_metadata_at_its_issuer_root_with_one_route(database_url: str) -> None:
    """SSF 1.0 §7.2 puts the transmitter metadata at the issuer's /.well-known/ssf-configuration;
    the extension serves it under its prefix and adds nothing at the root itself. A host that
    wants it there adds one route with ``OIDCLogout.ssf_configuration()``: the same document."""
    engine = create_engine(database_url)
    HostBase.metadata.create_all(engine)
    sessions = scoped_session(sessionmaker(engine))
    app = Flask("ssf_root_host")
    app.secret_key = "host-secret"
    app.config.update(OIDC_LOGOUT_ISSUER="https://idp.example", OIDC_LOGOUT_EMBEDDED_DISPATCHER=False)
    server = AuthorizationServer(app, query_client=lambda cid: None, save_token=lambda t, r: None)
    oidc = OIDCLogout(
        app, server=server, token_model=HostToken, db=sessions, url_prefix="/oidc", start_background=False
    )
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert "/oidc/.well-known/ssf-configuration" in rules
    assert "/.well-known/ssf-configuration" not in rules  # nothing added at the root
    app.add_url_rule("/.well-known/ssf-configuration", "ssf_at_root", lambda: oidc.ssf_configuration())
    client = app.test_client()
    try:
        prefixed = client.get("/oidc/.well-known/ssf-configuration")
        root = client.get("/.well-known/ssf-configuration")
        assert prefixed.status_code == root.status_code == 200
        assert root.get_json() == prefixed.get_json()
        doc = root.get_json()
        assert doc["issuer"] == "https://idp.example"
        assert doc["configuration_endpoint"] == "http://localhost/oidc/ssf/stream"
        assert doc["jwks_uri"] == "http://localhost/oidc/jwks"
    finally:
        oidc.provider.stop_background()
        sessions.remove()
        engine.dispose()
