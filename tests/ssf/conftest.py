"""A live OP (the demo IdP on a loopback port) with back-channel and front-channel RPs, SSF
receivers (OAuth clients holding ``ssf.manage``) and a Global Token Revocation caller; a real
loopback push receiver; SETs checked with an independent JOSE library (joserfc)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from oidc_logout.ssf import PUSH
from oidc_logout.testing import CapturedRequest, CaptureServer, Reply
from tests.support.idp import Browser, IdP, authorize, client_meta, start_idp

SECRET = "ssf-secret-" + "z" * 24


def service_client(client_id: str, scope: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_secret": SECRET,
        "grant_types": ["client_credentials"],
        "response_types": [],
        "scope": scope,
        "token_endpoint_auth_method": "client_secret_basic",
    }


@dataclass
class Env:
    idp: IdP
    rx: CaptureServer
    metas: dict[str, dict[str, Any]]

    @property
    def url(self) -> str:
        return self.idp.url

    def token(self, client_id: str = "receiver", scope: str | None = None) -> str:
        meta = self.metas[client_id]
        resp = requests.post(
            f"{self.url}/token",
            data={"grant_type": "client_credentials", "scope": scope or meta["scope"]},
            auth=(client_id, SECRET),
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    def api(
        self, method: str, path: str, client_id: str = "receiver", token: str | None = None, **kw: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token(client_id)}", **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def push_stream(
        self, path: str = "/events", *replies: Reply, client_id: str = "receiver", **extra: Any
    ) -> dict[str, Any]:
        url = self.rx.url(path, *(replies or (Reply(202),)))
        body = {
            "delivery": {"method": PUSH, "endpoint_url": url, "authorization_header": "Bearer rx-secret-1"},
            "events_requested": [
                "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
                "https://schemas.openid.net/secevent/caep/event-type/credential-change",
                "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
            ],
            **extra,
        }
        resp = self.api("POST", "/ssf/stream", client_id, json=body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def keys(self) -> KeySet:
        return KeySet.import_key_set(requests.get(f"{self.url}/jwks", timeout=10).json())

    def decode(self, raw: str) -> Any:
        """The SET verified with joserfc against the OP's published JWKS (RS256 only)."""
        return jwt.decode(raw, self.keys(), algorithms=["RS256"])

    def pushed(self, path: str = "/events") -> list[tuple[CapturedRequest, Any]]:
        return [(hit, self.decode(hit.body.decode("ascii"))) for hit in self.rx.hits(path)]

    def sign_in(
        self, user: str = "alice", rps: tuple[str, ...] = ("rp-a",)
    ) -> tuple[Browser, dict[str, Any]]:
        browser = Browser(self.url)
        browser.login(user)
        tokens = {
            name: authorize(browser, self.metas[name], scope="openid profile email offline_access")
            for name in rps
        }
        return browser, tokens


def make_env(database_url: str, **settings: Any) -> Env:
    rx = CaptureServer()
    metas: dict[str, dict[str, Any]] = {
        "rp-a": client_meta(
            "rp-a",
            port=21000,
            backchannel_logout_uri=rx.url("/rp-a/backchannel", Reply(200)),
            backchannel_logout_session_required=True,
        ),
        "rp-f": client_meta(
            "rp-f",
            port=21001,
            frontchannel_logout_uri="http://127.0.0.1:21001/frontchannel",
        ),
        "receiver": service_client("receiver", "ssf.manage ssf.read"),
        "other": service_client("other", "ssf.manage ssf.read"),
        "reader": service_client("reader", "ssf.read"),
        "tool": service_client("tool", "global_token_revocation"),
        "admin": service_client("admin", "oidc_logout:admin"),
    }
    defaults: dict[str, Any] = dict(
        delivery_timeout=2.0,
        delivery_backoff_base=0.05,
        delivery_backoff_cap=0.2,
        logout_wait_bound=3.0,
        ssf_min_verification_interval=0,
        delivery_max_concurrent_per_host=64,
        delivery_initial_concurrent_per_host=64,
    )
    defaults.update(settings)
    idp = start_idp(database_url, clients=list(metas.values()), **defaults)
    return Env(idp, rx, metas)


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    e = make_env(database_url)
    yield e
    e.idp.stop()
    e.rx.stop()


@pytest.fixture
def env_sqlite(sqlite_url: str) -> Iterator[Env]:
    e = make_env(sqlite_url)
    yield e
    e.idp.stop()
    e.rx.stop()
