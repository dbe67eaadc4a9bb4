"""The reference: a plain Authlib RFC 7009 revocation endpoint as Authlib documents it
(``authlib.integrations.sqla_oauth2``: ``OAuth2ClientMixin`` / ``OAuth2TokenMixin`` models,
``create_query_client_func``, ``create_save_token_func``, ``create_revocation_endpoint``) on
Flask + SQLAlchemy ORM + SQLite. Authlib's docs use Flask-SQLAlchemy's ``db.session``; a plain
SQLAlchemy ``scoped_session`` removed at app teardown is the same thing without the extra
package.

Environment: ``BENCH_REF_DB`` (SQLAlchemy URL), ``BENCH_REF_PRAGMAS=1`` to give SQLite the same
WAL + synchronous=NORMAL settings oidc_logout uses (the stock configuration has neither).
Served by gunicorn as ``bench.reference_authlib:wsgi_app()``.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.sqla_oauth2 import (
    OAuth2ClientMixin,
    OAuth2TokenMixin,
    create_query_client_func,
    create_revocation_endpoint,
    create_save_token_func,
)
from flask import Flask
from sqlalchemy import Column, Integer, create_engine, event, insert
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker


class Base(DeclarativeBase):
    pass


class RefClient(Base, OAuth2ClientMixin):
    __tablename__ = "oauth2_client"
    id = Column(Integer, primary_key=True)


class RefToken(Base, OAuth2TokenMixin):
    __tablename__ = "oauth2_token"
    id = Column(Integer, primary_key=True)


def make_engine(url: str, pragmas: bool):  # type: ignore[no-untyped-def]
    engine = create_engine(url)
    if pragmas:

        @event.listens_for(engine, "connect")
        def _p(dbapi_conn, _rec):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def create_app(url: str, pragmas: bool = False) -> Flask:
    engine = make_engine(url, pragmas)
    session = scoped_session(sessionmaker(engine))
    app = Flask(__name__)
    server = AuthorizationServer(
        app,
        query_client=create_query_client_func(session, RefClient),
        save_token=create_save_token_func(session, RefToken),
    )
    server.register_endpoint(create_revocation_endpoint(session, RefToken))

    @app.route("/revoke", methods=["POST"])
    def revoke():  # type: ignore[no-untyped-def]
        return server.create_endpoint_response("revocation")

    @app.route("/health")
    def health():  # type: ignore[no-untyped-def]
        return "ok"

    @app.teardown_appcontext
    def _remove(_exc: Any) -> None:
        session.remove()

    return app


def wsgi_app() -> Flask:
    return create_app(os.environ["BENCH_REF_DB"], os.environ.get("BENCH_REF_PRAGMAS") == "1")


def setup_db(url: str, client_id: str, client_secret: str, n_tokens: int, pragmas: bool) -> list[str]:
    """Create the tables, one confidential client and ``n_tokens`` valid access tokens."""
    engine = make_engine(url, pragmas)
    Base.metadata.create_all(engine)
    with sessionmaker(engine).begin() as db:
        client = RefClient(
            client_id=client_id, client_secret=client_secret, client_id_issued_at=int(time.time())
        )
        client.set_client_metadata(
            {
                "grant_types": ["client_credentials"],
                "scope": "read",
                "token_endpoint_auth_method": "client_secret_basic",
            }
        )
        db.add(client)
    values = [secrets.token_urlsafe(32) for _ in range(n_tokens)]
    now = int(time.time())
    rows = [
        dict(
            client_id=client_id,
            token_type="Bearer",
            access_token=v,
            scope="read",
            issued_at=now,
            access_token_revoked_at=0,
            refresh_token_revoked_at=0,
            expires_in=7200,
        )
        for v in values
    ]
    with engine.begin() as conn:
        for i in range(0, len(rows), 2000):
            conn.execute(insert(RefToken), rows[i : i + 2000])
    engine.dispose()
    return values
