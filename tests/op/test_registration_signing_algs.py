"""RFC 7591 §2 / Discovery §3: registration accepts only an ``id_token_signed_response_alg``
the OP advertises in ``id_token_signing_alg_values_supported`` and holds a key for (issue 12
item 6). A real OP on a loopback port, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.idp import IdP, start_idp


@pytest.fixture
def idp(database_url: str) -> Iterator[IdP]:
    server = start_idp(database_url, registration_open=True)
    yield server
    server.stop()


def register(idp: IdP, **meta: Any) -> requests.Response:
    return requests.post(
        f"{idp.url}/register", json={"redirect_uris": ["https://rp.example.com/cb"], **meta}, timeout=10
    )


def advertised(idp: IdP) -> list[str]:
    doc = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    return list(doc["id_token_signing_alg_values_supported"])


def test_an_alg_without_a_key_is_refused_with_invalid_client_metadata(idp: IdP) -> None:
    """PS256 is an alg this code can sign with, but the OP has no PS256 key and does not
    advertise it: registering it used to succeed and the code exchange then failed with 500."""
    assert "PS256" not in advertised(idp)
    resp = register(idp, id_token_signed_response_alg="PS256")
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == "invalid_client_metadata"
    assert "id_token_signed_response_alg" in body["error_description"]


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512"])
def test_unsupported_algs_are_refused(idp: IdP, alg: str) -> None:
    resp = register(idp, id_token_signed_response_alg=alg)
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_client_metadata")


def test_every_advertised_alg_is_accepted(idp: IdP) -> None:
    algs = advertised(idp)
    assert algs
    for alg in algs:
        resp = register(idp, id_token_signed_response_alg=alg)
        assert resp.status_code == 201, (alg, resp.text)
        assert resp.json()["id_token_signed_response_alg"] == alg
