"""Extension mode registers RFC 7009 revocation on the host's server under Authlib's name
``revocation``. Authlib answers a name with the endpoint registered first, so a revocation
endpoint of the host's own, registered before or after the extension, is refused at once with
an error naming it: neither of the two is ever silently left unreachable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.sqla_oauth2 import create_revocation_endpoint
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from oidc_logout.flask.host import HostRevocationEndpoint
from oidc_logout.op import OIDCLogout

from .test_extension_mode import HostBase, HostToken


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[scoped_session[Session]]:
    engine = create_engine(sqlite_url)
    HostBase.metadata.create_all(engine)
    factory = scoped_session(sessionmaker(engine))
    yield factory
    factory.remove()
    engine.dispose()


def host_app(server: AuthorizationServer) -> Flask:
    app = Flask("host_with_revocation")
    app.secret_key = "host-secret"
    app.config.update(OIDC_LOGOUT_ISSUER="https://idp.example", OIDC_LOGOUT_EMBEDDED_DISPATCHER=False)
    server.init_app(app)
    return app


def new_server() -> AuthorizationServer:
    return AuthorizationServer(query_client=lambda cid: None, save_token=lambda t, r: None)


def test_a_host_revocation_endpoint_registered_before_the_extension_is_refused_by_name(
    sessions: scoped_session[Session],
) -> None:
    server = new_server()

    class HostRevocation(create_revocation_endpoint(sessions, HostToken)):  # type: ignore[misc]
        pass

    server.register_endpoint(HostRevocation)
    with pytest.raises(RuntimeError, match=r"HostRevocation\b.*register_endpoint"):
        OIDCLogout(
            host_app(server), server=server, token_model=HostToken, db=sessions, start_background=False
        )
    # Nothing of ours was registered in front of it.
    assert [type(e) for e in server._endpoints["revocation"]] == [HostRevocation]


def test_a_host_revocation_endpoint_registered_after_the_extension_is_refused(
    sessions: scoped_session[Session],
) -> None:
    server = new_server()
    app = host_app(server)
    OIDCLogout(app, server=server, token_model=HostToken, db=sessions, start_background=False)
    try:
        with pytest.raises(RuntimeError, match="own 'revocation' endpoint"):
            server.register_endpoint(create_revocation_endpoint(sessions, HostToken))
        (ours,) = server._endpoints["revocation"]
        assert isinstance(ours, HostRevocationEndpoint)
    finally:
        app.extensions["oidc_logout"].provider.stop_background()
