"""SSRF guard: back-channel logout URIs that are (or resolve to) link-local, private or
loopback addresses are refused at registration outside development mode unless
``address_allowlist`` admits them, and refused AGAIN at delivery time (DNS and settings can
change after registration). Only IP literals and ``localhost`` are used: no traffic is
ever sent to a non-loopback address (those are refused before any connect)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from oidc_logout._http import DisallowedAddress, check_address
from oidc_logout.config import Settings
from oidc_logout.delivery.dispatcher import Dispatcher
from oidc_logout.demo.idp import create_idp_app
from oidc_logout.keys import KeyRing
from oidc_logout.storage.models import Client, Delivery
from tests.faults.conftest import Receiver, factory_for, seed_fanout

from .conftest import ISSUER

REFUSED = [
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "https://[::ffff:169.254.169.254]/bc",  # the same, IPv4-mapped
    "https://10.0.0.5/bc",
    "https://192.168.1.10/bc",
    "https://172.16.0.1/bc",
    "https://172.31.255.254/bc",
    "https://100.64.0.1/bc",  # shared address space (CGNAT)
    "https://0.0.0.0/bc",
    "https://[fe80::1]/bc",
    "https://[fd00::1]/bc",
    "https://127.0.0.1/bc",  # loopback outside dev mode
    "https://127.1.2.3/bc",
    "https://[::1]/bc",
    "https://localhost/bc",  # a name that resolves to loopback
    "https://localhost./bc",
    # Addresses that embed an IPv4 address (issue 12 item 9): judged like that IPv4.
    "https://[2002:7f00:1::]/bc",  # 6to4 (RFC 3056) of 127.0.0.1
    "https://[2002:a9fe:a9fe::1]/bc",  # 6to4 of 169.254.169.254 (metadata)
    "https://[2002:a00:5::]/bc",  # 6to4 of 10.0.0.5
    "https://[2002:c0a8:10a::]/bc",  # 6to4 of 192.168.1.10
]

#: (URI, allowlist admitting the IPv6 prefix itself): the embedded IPv4 must still be allowed.
EMBEDDED = [
    ("https://[64:ff9b::a9fe:a9fe]/bc", "64:ff9b::/96"),  # NAT64 WKP (RFC 6052 §2.1)
    ("https://[64:ff9b::7f00:1]/bc", "64:ff9b::/96"),
    ("https://[64:ff9b::a00:5]/bc", "64:ff9b::/96"),
    ("https://[64:ff9b:1::a9fe:a9fe]/bc", "64:ff9b:1::/48"),  # RFC 8215 local use, /96 form
    ("https://[64:ff9b:1:0:a9:fea9:fe00:0]/bc", "64:ff9b:1::/48"),  # ... its /64 form
    ("https://[2001:0:4136:e378:8000:63bf:f5ff:fffa]/bc", "2001::/32"),  # Teredo → 10.0.0.5
    ("https://[2001:0:a00:5:8000:63bf:a2a7:eef1]/bc", "2001::/32"),  # Teredo server 10.0.0.5
    ("https://[2002:a9fe:a9fe::]/bc", "2002::/16"),
]


def _app(tmp: Path, name: str, **settings: Any) -> Any:
    s = Settings(
        issuer=ISSUER,
        database_url=f"sqlite:///{tmp / name}",
        dev_mode=False,
        expiry_sweep_interval=0,
        embedded_dispatcher=False,
        registration_open=True,
        registration_rate_limit=0,
        **settings,
    )
    return create_idp_app(s, start_background=False)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ssrf")
    out = {
        "strict": _app(tmp, "strict.db"),
        "allow": _app(tmp, "allow.db", address_allowlist=("10.0.0.0/8", "192.168.1.0/24")),
    }
    yield out
    for app in out.values():
        app.extensions["oidc_logout"].provider.engine.dispose()


def register(app: Any, uri: str) -> Any:
    return app.test_client().post(
        "/register",
        data=json.dumps({"redirect_uris": ["https://rp.example.com/cb"], "backchannel_logout_uri": uri}),
        content_type="application/json",
    )


def client_count(app: Any) -> int:
    with app.extensions["oidc_logout"].provider.session_factory() as db:
        return len(list(db.scalars(select(Client.client_id))))


@pytest.mark.parametrize("uri", REFUSED)
def test_registration_refuses_internal_logout_uris(apps: dict[str, Any], uri: str) -> None:
    before = client_count(apps["strict"])
    resp = register(apps["strict"], uri)
    assert resp.status_code == 400, resp.data
    body = resp.get_json()
    assert (
        body["error"] == "invalid_client_metadata" and "backchannel_logout_uri" in body["error_description"]
    )
    assert client_count(apps["strict"]) == before


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("https://10.20.30.40/bc", True),
        ("https://192.168.1.10/bc", True),
        ("https://192.168.2.10/bc", False),  # outside the allowlisted /24
        ("https://169.254.169.254/bc", False),
        ("https://172.16.0.1/bc", False),
    ],
)
def test_allowlist_admits_only_the_listed_networks(apps: dict[str, Any], uri: str, ok: bool) -> None:
    resp = register(apps["allow"], uri)
    assert resp.status_code == (201 if ok else 400), resp.data
    if ok:
        assert resp.get_json()["backchannel_logout_uri"] == uri


@pytest.mark.parametrize(("uri", "prefix"), EMBEDDED)
def test_embedded_internal_ipv4_is_refused_even_with_the_prefix_allowlisted(
    tmp_path: Path, uri: str, prefix: str
) -> None:
    """NAT64, Teredo and 6to4 addresses reach the IPv4 address they embed: allowlisting
    the translation prefix must not admit 169.254.169.254, 127.0.0.1 or 10.0.0.5 through it."""
    app = _app(tmp_path, "embedded.db", address_allowlist=(prefix,))
    try:
        resp = register(app, uri)
        assert resp.status_code == 400, resp.data
        assert resp.get_json()["error"] == "invalid_client_metadata"
    finally:
        app.extensions["oidc_logout"].provider.engine.dispose()


@pytest.mark.parametrize(
    ("address", "kw"),
    [
        ("2002:5db8:d70e::1", {}),  # 6to4 of a public IPv4: as public as that IPv4
        ("64:ff9b::5db8:d70e", {"allowlist": ("64:ff9b::/96",)}),  # NAT64 of a public IPv4
        ("2002:a00:5::", {"allowlist": ("10.0.0.0/8",)}),  # the embedded IPv4 is allowlisted
        ("2002:7f00:1::", {"dev_mode": True}),  # loopback in dev mode, like 127.0.0.1
    ],
)
def test_embedded_ipv4_is_judged_exactly_like_the_plain_ipv4(address: str, kw: dict[str, Any]) -> None:
    check_address(address, dev_mode=kw.get("dev_mode", False), allowlist=kw.get("allowlist", ()))


def test_embedded_refusal_names_the_embedded_address() -> None:
    with pytest.raises(DisallowedAddress, match=r"embeds 169\.254\.169\.254 \(6to4"):
        check_address("2002:a9fe:a9fe::", dev_mode=False)


def test_public_literal_is_registered_without_any_traffic(apps: dict[str, Any]) -> None:
    assert register(apps["strict"], "https://93.184.215.14/bc").status_code == 201


@pytest.fixture
def rp() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


def _deliver(tmp_path: Path, uris: list[str], **settings: Any) -> dict[str, Any]:
    factory = factory_for(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        term_id, _ids = seed_fanout(factory, sessions=1, uris=uris)
        s = Settings(
            issuer=ISSUER,
            delivery_max_attempts=1,
            delivery_connect_timeout=1.0,
            delivery_timeout=1.0,
            **settings,
        )
        dispatcher = Dispatcher(factory, KeyRing(factory), s)
        try:
            dispatcher.run_once(timeout=10)
        finally:
            dispatcher.stop(2)
        with factory() as db:
            return {
                d.target_uri: (d.state, d.last_error)
                for d in db.scalars(select(Delivery).where(Delivery.termination_id == term_id))
            }
    finally:
        factory.kw["bind"].dispose()


def test_delivery_refuses_loopback_targets_outside_dev_mode(tmp_path: Path, rp: Receiver) -> None:
    """Rows whose target is (now) disallowed are not sent: no connection reaches the RP."""
    uris = [
        rp.url("/literal"),
        f"http://localhost:{rp.port}/name",
        f"http://[::ffff:127.0.0.1]:{rp.port}/mapped",
    ]
    result = _deliver(tmp_path, uris, dev_mode=False)
    for uri in uris:
        state, error = result[uri]
        assert state == "failed" and "address not allowed" in (error or ""), (uri, result[uri])
    assert rp.total == 0


def test_delivery_follows_the_allowlist_at_send_time(tmp_path: Path, rp: Receiver) -> None:
    uris = [rp.url("/literal"), f"http://localhost:{rp.port}/name"]
    result = _deliver(tmp_path, uris, dev_mode=False, address_allowlist=("127.0.0.0/8", "::1/128"))
    assert {state for state, _ in result.values()} == {"delivered"}, result
    assert rp.total == 2
