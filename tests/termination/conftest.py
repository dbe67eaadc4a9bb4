"""A live OP with three back-channel RPs (real loopback receivers) for termination tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from jwcrypto import jwk, jwt

from oidc_logout.testing import CaptureServer as RPServer
from oidc_logout.testing import Reply
from tests.support.idp import IdP, client_meta, start_idp

RP_NAMES = ("rp-a", "rp-b", "rp-c")


@dataclass
class Env:
    idp: IdP
    rps: RPServer
    metas: dict[str, dict[str, Any]]

    def logout_tokens(self, name: str) -> list[dict[str, Any]]:
        """The logout tokens rp ``name`` received, verified against the OP's JWKS."""
        keys = jwk.JWKSet.from_json(requests.get(f"{self.idp.url}/jwks", timeout=5).text)
        out = []
        for hit in self.rps.hits(f"/{name}"):
            raw = hit.form["logout_token"][0]
            tok = jwt.JWT(jwt=raw, key=keys, algs=["RS256", "ES256"], check_claims={})
            out.append(
                {
                    "header": tok.token.jose_header,
                    "claims": json.loads(tok.claims),
                    "content_type": hit.headers.get("Content-Type"),
                    "form": hit.form,
                }
            )
        return out


def make_env(
    database_url: str,
    replies: dict[str, list[Reply]] | None = None,
    extra_clients: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> Env:
    rps = RPServer()
    metas = {}
    for i, name in enumerate(RP_NAMES):
        uri = rps.url(f"/{name}", *((replies or {}).get(name) or [Reply(200)]))
        metas[name] = client_meta(
            name, port=20000 + i, backchannel_logout_uri=uri, backchannel_logout_session_required=True
        )
    admin = {
        "client_id": "admin",
        "client_secret": "admin-secret-" + "y" * 20,
        "grant_types": ["client_credentials"],
        "response_types": [],
        "scope": "oidc_logout:admin",
        "token_endpoint_auth_method": "client_secret_basic",
    }
    metas["admin"] = admin
    defaults: dict[str, Any] = dict(
        delivery_timeout=2.0, delivery_backoff_base=0.05, delivery_backoff_cap=0.2, logout_wait_bound=2.0
    )
    defaults.update(settings)
    idp = start_idp(database_url, clients=list(metas.values()) + (extra_clients or []), **defaults)
    return Env(idp, rps, metas)


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    e = make_env(database_url)
    yield e
    e.idp.stop()
    e.rps.stop()


def admin_token(env: Env, scope: str = "oidc_logout:admin") -> str:
    meta = env.metas["admin"]
    resp = requests.post(
        f"{env.idp.url}/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(meta["client_id"], meta["client_secret"]),
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])
