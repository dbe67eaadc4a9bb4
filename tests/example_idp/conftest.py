"""The example IdP (examples/authlib_idp) on a real loopback port, and a user's browser; the
example after adopting oidc-logout (extension mode) with a back-channel logout client
(``adopted``), and the requests the tests make of it."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from examples.authlib_idp import create_app, seed
from examples.authlib_idp.models import OAuth2Token, User, db
from oidc_logout.testing import CaptureServer
from tests.support.servers import LiveServer

PASSWORD = "correct horse battery staple"
REGISTRATION_TOKEN = "registration-" + "t" * 24
#: Nothing listens there: the tests read the redirect's Location instead of following it.
RP = "http://127.0.0.1:9"


def client_meta(client_id: str = "webapp", *, public: bool = False, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "client_id": client_id,
        "client_name": f"The {client_id} app",
        "redirect_uris": [f"{RP}/{client_id}/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid profile email",
        "token_endpoint_auth_method": "none" if public else "client_secret_basic",
    }
    if not public:
        meta["client_secret"] = f"{client_id}-secret-" + "s" * 20
    meta.update(extra)
    return meta


WEBAPP = client_meta("webapp")
SPA = client_meta("spa", public=True)


@dataclass
class ExampleIdP:
    server: LiveServer
    app: Flask

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()
        self.app.extensions["oidc_logout"].provider.stop_background()
        with self.app.app_context():
            db.engine.dispose()


#: The issuer of a production-mode example (the tests reach it over loopback http).
PRODUCTION_ISSUER = "https://idp.example.test"


def start_example(
    database_url: str,
    *,
    clients: list[dict[str, Any]] | None = None,
    dev: bool = True,
    registration_token: str | None = REGISTRATION_TOKEN,
    config: dict[str, Any] | None = None,
) -> ExampleIdP:
    """What run.py does, on a free loopback port in this process (``config``: more app config,
    e.g. ``OIDC_LOGOUT_*`` settings). Outside dev mode the issuer is an https one (the
    extension refuses to start with a plain-http issuer there), served on the loopback port."""
    server = LiveServer()
    app = create_app(
        {
            "ISSUER": server.url if dev else PRODUCTION_ISSUER,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SECRET_KEY": secrets.token_hex(32),
            "DEV_MODE": dev,
            "REGISTRATION_TOKEN": registration_token,
            **(config or {}),
        }
    )
    seed(app, password=PASSWORD, clients=clients)
    server.app = app
    server.start()
    return ExampleIdP(server, app)


@pytest.fixture
def idp(database_url: str) -> Iterator[ExampleIdP]:
    """The example IdP with a confidential client (``webapp``) and a public one (``spa``)."""
    example = start_example(database_url, clients=[WEBAPP, SPA])
    yield example
    example.stop()


# -- HTML forms, as a browser sees them ------------------------------------------------------
@dataclass
class Form:
    action: str
    method: str
    id: str | None
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower(), a.get("id")))
        elif tag == "input" and self.forms and "name" in a:
            self.forms[-1].fields[a["name"]] = a.get("value", "")


def forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def redirect_params(response: requests.Response, redirect_uri: str) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Browser:
    """A requests.Session acting as the user's browser: cookies, and forms submitted as shown."""

    idp_url: str
    http: requests.Session = field(default_factory=requests.Session)

    def submit(self, page: requests.Response, form: Form, **values: str) -> requests.Response:
        data = {**form.fields, **values}
        url = urljoin(page.url, form.action) if form.action else page.url
        return self.http.request(form.method, url, data=data, allow_redirects=False, timeout=10)

    def login(
        self, username: str = "alice", password: str = PASSWORD, page_url: str | None = None
    ) -> requests.Response:
        page = self.http.get(page_url or f"{self.idp_url}/login", timeout=10)
        assert page.status_code == 200, page.text
        (form,) = forms(page.text)
        return self.submit(page, form, username=username, password=password)

    def authorize(self, meta: dict[str, Any], **params: str) -> requests.Response:
        """GET the authorization endpoint; returns the consent page (or a redirect)."""
        query = {
            "response_type": "code",
            "client_id": meta["client_id"],
            "redirect_uri": meta["redirect_uris"][0],
            "scope": "openid profile email",
            "state": secrets.token_urlsafe(8),
        }
        query.update(params)
        return self.http.get(
            f"{self.idp_url}/oauth/authorize", params=query, allow_redirects=False, timeout=10
        )

    def consent(self, page: requests.Response, approve: bool = True) -> requests.Response:
        approve_form, deny_form = forms(page.text)
        return self.submit(page, approve_form if approve else deny_form)


@dataclass
class Flow:
    """One completed authorization code flow (PKCE, nonce)."""

    code: str
    verifier: str
    nonce: str
    state: str
    params: dict[str, str]


def run_code_flow(browser: Browser, meta: dict[str, Any], scope: str = "openid profile email") -> Flow:
    verifier, challenge = pkce_pair()
    nonce, state = secrets.token_urlsafe(12), secrets.token_urlsafe(8)
    page = browser.authorize(
        meta, scope=scope, nonce=nonce, state=state, code_challenge=challenge, code_challenge_method="S256"
    )
    assert page.status_code == 200, page.text
    params = redirect_params(browser.consent(page), meta["redirect_uris"][0])
    assert params["state"] == state
    return Flow(params["code"], verifier, nonce, state, params)


def client_post(url: str, meta: dict[str, Any], **data: str) -> requests.Response:
    """POST ``data`` as ``meta``'s client, authenticating as the client registered it: HTTP
    Basic, or client_id alone for a public one."""
    auth = None
    if meta.get("token_endpoint_auth_method") == "none":
        data["client_id"] = meta["client_id"]
    else:
        auth = (meta["client_id"], meta["client_secret"])
    return requests.post(url, data=data, auth=auth, timeout=10)


def token_request(idp_url: str, meta: dict[str, Any], **data: str) -> requests.Response:
    """POST to the token endpoint, authenticating as the client registered it."""
    return client_post(f"{idp_url}/oauth/token", meta, **data)


def revoke(idp: ExampleIdP, meta: dict[str, Any], token: str, hint: str | None = None) -> requests.Response:
    """POST /oauth/revoke (RFC 7009) as ``meta``'s client."""
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    return client_post(f"{idp.url}/oauth/revoke", meta, **data)


def exchange(idp_url: str, meta: dict[str, Any], flow: Flow) -> requests.Response:
    return token_request(
        idp_url,
        meta,
        grant_type="authorization_code",
        code=flow.code,
        code_verifier=flow.verifier,
        redirect_uri=meta["redirect_uris"][0],
    )


def verify_id_token(idp_url: str, id_token: str) -> dict[str, Any]:
    """Verify with the keys the IdP publishes (discovery → jwks_uri); return the claims."""
    doc = requests.get(f"{idp_url}/.well-known/openid-configuration", timeout=10).json()
    keys = KeySet.import_key_set(requests.get(doc["jwks_uri"], timeout=10).json())
    token = jwt.decode(id_token, keys, algorithms=doc["id_token_signing_alg_values_supported"])
    return dict(token.claims)


def userinfo(idp: ExampleIdP, access_token: str) -> requests.Response:
    return requests.get(
        f"{idp.url}/oauth/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=10
    )


def userinfo_status(idp: ExampleIdP, access_token: str) -> int:
    return userinfo(idp, access_token).status_code


# -- the example after adopting oidc-logout --------------------------------------------------
@pytest.fixture
def rp() -> Iterator[CaptureServer]:
    """A loopback RP: receives the back-channel logouts of the clients ``logout_client`` makes."""
    server = CaptureServer()
    yield server
    server.stop()


def logout_client(
    rp: CaptureServer, client_id: str = "portal", *, path: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A client with a back-channel logout URI at ``rp`` (``path``, by default
    ``/<client_id>/backchannel``) and a post-logout redirect URI."""
    return client_meta(
        client_id,
        backchannel_logout_uri=rp.base_url + (path or f"/{client_id}/backchannel"),
        backchannel_logout_session_required=True,
        post_logout_redirect_uris=[f"http://127.0.0.1:9/{client_id}/bye"],
        **extra,
    )


@pytest.fixture
def portal(rp: CaptureServer) -> dict[str, Any]:
    """The back-channel logout client of ``adopted``."""
    return logout_client(rp)


@pytest.fixture
def host_clients(portal: dict[str, Any]) -> list[dict[str, Any]]:
    """The clients ``adopted`` is seeded with; a test module overrides this fixture for more."""
    return [WEBAPP, portal]


@pytest.fixture
def host_config() -> dict[str, Any]:
    """More app config for ``adopted``; a test module overrides this fixture to set some."""
    return {}


@pytest.fixture
def adopted(
    database_url: str,
    portal: dict[str, Any],
    host_clients: list[dict[str, Any]],
    host_config: dict[str, Any],
) -> Iterator[tuple[ExampleIdP, dict[str, Any]]]:
    """The example (adopted oidc-logout in extension mode) seeded with ``host_clients``, and
    ``portal``'s metadata."""
    example = start_example(database_url, clients=host_clients, config=host_config)
    yield example, portal
    example.stop()


def signed_in(idp: ExampleIdP, meta: dict[str, Any]) -> tuple[Browser, dict[str, Any]]:
    """alice signed in at the example and ``meta``'s client holding its tokens (code flow)."""
    browser = Browser(idp.url)
    assert browser.login().status_code == 303
    tokens = exchange(idp.url, meta, run_code_flow(browser, meta))
    assert tokens.status_code == 200, tokens.text
    return browser, tokens.json()


def introspect(idp: ExampleIdP, meta: dict[str, Any], token: str) -> dict[str, Any]:
    """RFC 7662 at the extension's ``/oidc/introspect`` as ``meta``'s client."""
    r = requests.post(
        f"{idp.url}/oidc/introspect",
        data={"token": token},
        auth=(meta["client_id"], meta["client_secret"]),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def alice_sub(idp: ExampleIdP) -> str:
    with idp.app.app_context():
        return str(db.session.scalar(select(User.id).where(User.username == "alice")))


def host_row(idp: ExampleIdP, access_token: str) -> OAuth2Token:
    """The example's own token row of ``access_token`` (detached from its session)."""
    with idp.app.app_context():
        row = db.session.scalar(select(OAuth2Token).where(OAuth2Token.access_token == access_token))
        assert row is not None
        db.session.expunge(row)
        return row
