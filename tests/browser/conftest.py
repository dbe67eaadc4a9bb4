"""A real Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a live OP and
demo RPs, each on its own loopback port.

One browser per module (launching costs ~1 s); every test gets a fresh, isolated context
(its own cookie jar). Playwright's ``launch`` gives each browser a fresh temporary user data
directory. Set OIDC_LOGOUT_SCREENSHOTS=<dir> to save screenshots of the pages a person sees.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import request as flask_request
from sqlalchemy import select

from oidc_logout.demo.rp_app import RPConfig, create_rp_app
from oidc_logout.storage.models import Delivery
from tests.support.idp import PASSWORD, IdP, start_idp
from tests.support.servers import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = os.environ.get("OIDC_LOGOUT_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("browser is not available on this machine")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``new_page(**context_options)``: a page in a fresh context, closed after the test."""
    contexts: list[Any] = []

    def make(**options: Any) -> Any:
        ctx = browser.new_context(viewport={"width": 800, "height": 520}, **options)
        ctx.set_default_timeout(10_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name))


# -- the RPs ----------------------------------------------------------------------------------
@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int


@dataclass
class RP:
    """A demo RP (``create_rp_app``) on a loopback port, with a record of the requests its
    logout endpoints got and of the sessions they ended."""

    name: str
    client_id: str
    server: LiveServer
    backchannel: bool
    frontchannel: bool
    hang_frontchannel: bool = False
    app: Any = None
    hits: list[Hit] = field(default_factory=list)
    #: (path of the request that ended it, local session id) for each session that existed.
    ended: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def cookie_name(self) -> str:
        return f"rp_{self.client_id.replace('-', '_')}"

    def config(self, issuer: str) -> RPConfig:
        return RPConfig(
            name=self.name,
            client_id=self.client_id,
            client_secret=f"{self.client_id}-secret-" + "z" * 16,
            base_url=self.url,
            issuer=issuer,
            backchannel=self.backchannel,
            frontchannel=self.frontchannel,
        )

    def attach(self, issuer: str) -> None:
        app = create_rp_app(self.config(issuer))
        state = app.extensions["oidc_logout_rp"]
        end = state.receiver.end_local_session
        store = state.store

        def counting_end(local_id: str) -> None:
            if store.load(local_id) is not None:
                self.ended.append((flask_request.path, local_id))
            end(local_id)

        state.receiver.end_local_session = counting_end
        self.app = app
        self.server.app = self._wsgi
        self.server.start()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        logout_path = path.startswith("/oidc/")
        if self.hang_frontchannel and path == "/oidc/frontchannel-logout":
            # Accept the connection, read the request, never answer (until teardown).
            self.hits.append(
                Hit(environ["REQUEST_METHOD"], path, parse_qs(environ.get("QUERY_STRING", "")), 0)
            )
            self.release.wait(30)
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        seen: dict[str, int] = {}

        def recording_start(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        body = self.app(environ, recording_start)
        if logout_path:
            self.hits.append(
                Hit(
                    environ["REQUEST_METHOD"],
                    path,
                    parse_qs(environ.get("QUERY_STRING", "")),
                    seen.get("status", 0),
                )
            )
        return body

    def hits_on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def stop(self) -> None:
        self.release.set()
        self.server.stop()


@dataclass
class Env:
    idp: IdP
    rps: dict[str, RP]

    def deliveries(self) -> dict[tuple[str, str], Delivery]:
        """(client_id, channel) -> delivery row, over every termination in this database."""
        with self.idp.provider.session_factory() as db:
            rows = db.scalars(select(Delivery).order_by(Delivery.id)).all()
        return {(d.client_id, d.channel): d for d in rows}

    def wait_deliveries(
        self, expected: dict[tuple[str, str], str], timeout: float = 5.0
    ) -> dict[tuple[str, str], Delivery]:
        """Poll until every (client_id, channel) row is in the expected state."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.deliveries()
            states = {k: rows[k].state for k in expected if k in rows}
            if states == expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


def make_env(tmp_path: Path, rps: list[RP], **settings: Any) -> Env:
    """The OP on a SQLite file plus ``rps``, every one on its own loopback port."""
    defaults: dict[str, Any] = dict(
        delivery_timeout=2.0, delivery_backoff_base=0.05, delivery_backoff_cap=0.2, logout_wait_bound=2.0
    )
    defaults.update(settings)
    clients = [rp.config("http://placeholder").client_metadata() for rp in rps]
    idp = start_idp(f"sqlite:///{tmp_path / 'op.db'}", clients=clients, **defaults)
    for rp in rps:
        rp.attach(idp.url)
    return Env(idp, {rp.client_id: rp for rp in rps})


def new_rp(name: str, client_id: str, *, back: bool, front: bool, hang: bool = False) -> RP:
    return RP(name, client_id, LiveServer(), back, front, hang_frontchannel=hang)


@pytest.fixture
def env_factory(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def make(rps: list[RP], **settings: Any) -> Env:
        e = make_env(tmp_path, rps, **settings)
        made.append(e)
        return e

    yield make
    for e in made:
        for rp in e.rps.values():
            rp.stop()
        e.idp.stop()


# -- what a person does in the browser -----------------------------------------------------------
def redirect_chain(response: Any) -> list[str]:
    """Every URL the navigation that gave ``response`` went through, first to last."""
    urls = []
    req = response.request
    while req is not None:
        urls.append(req.url)
        req = req.redirected_from
    return list(reversed(urls))


def sign_in(page: Any, rp: RP, idp: IdP, *, expect_login_form: bool) -> list[str]:
    """Open the RP's protected page; sign in at the OP if it asks. Returns the URLs visited."""
    resp = page.goto(f"{rp.url}/protected")
    chain = redirect_chain(resp)
    if expect_login_form:
        assert page.url.startswith(f"{idp.url}/login"), page.url
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation(url=f"{rp.url}/protected"):
            page.click("button[type=submit], input[type=submit]")
    else:
        # The OP session answers /authorize at once: no login form.
        assert page.url == f"{rp.url}/protected", chain
        assert not any(u.startswith(f"{idp.url}/login") for u in chain), chain
    assert page.inner_text("#protected").startswith("Secret page of"), page.content()
    return chain


def asks_for_login(page: Any, rp: RP, idp: IdP) -> None:
    """Navigating to the RP's protected page goes to its /login, and on to the OP's form."""
    resp = page.goto(f"{rp.url}/protected")
    chain = redirect_chain(resp)
    assert chain[0] == f"{rp.url}/protected"
    assert chain[1].startswith(f"{rp.url}/login"), chain
    assert page.url.startswith(f"{idp.url}/login"), page.url
    assert page.locator("input[name=username]").count() == 1


def cookie_value(page: Any, rp: RP) -> str:
    for c in page.context.cookies(rp.url):
        if c["name"] == rp.cookie_name:
            return str(c["value"])
    raise AssertionError(f"no {rp.cookie_name} cookie in the browser")


def protected_with_cookie(rp: RP, value: str) -> requests.Response:
    """A fresh HTTP client replaying a session cookie copied out of the browser."""
    return requests.get(
        f"{rp.url}/protected", cookies={rp.cookie_name: value}, allow_redirects=False, timeout=5
    )


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)
