"""The admin API, the operator console and SSF stream management on the adopted example IdP
(extension mode): authenticated with access tokens the host's own token endpoint issued
(``client_credentials`` of an operator client from the clients file), over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from sqlalchemy import select

from examples.authlib_idp.models import OAuth2Token, db
from oidc_logout.ssf import SESSION_REVOKED
from oidc_logout.storage.models import Client, Delivery, OPSession, Termination
from oidc_logout.testing import CaptureServer

from .conftest import (
    REGISTRATION_TOKEN,
    WEBAPP,
    Browser,
    ExampleIdP,
    alice_sub,
    exchange,
    host_row,
    introspect,
    revoke,
    run_code_flow,
    signed_in,
    token_request,
    userinfo_status,
)

ADMIN_SCOPE = "oidc_logout:admin"


def service_client(client_id: str, scope: str) -> dict[str, Any]:
    """An operator client from the deployment's clients file (client_credentials only)."""
    return {
        "client_id": client_id,
        "client_secret": f"{client_id}-secret-" + "s" * 20,
        "client_name": client_id,
        "grant_types": ["client_credentials"],
        "response_types": [],
        "scope": scope,
        "token_endpoint_auth_method": "client_secret_basic",
    }


OPS = service_client("ops", f"{ADMIN_SCOPE} ssf.manage ssf.read")
AUDITOR = service_client("auditor", "ssf.read")
RECEIVER = service_client("receiver", "ssf.manage")
SECOPS = service_client("secops", "global_token_revocation")


@pytest.fixture
def host_clients(portal: dict[str, Any]) -> list[dict[str, Any]]:
    return [WEBAPP, portal, OPS, AUDITOR, RECEIVER, SECOPS]


@pytest.fixture
def host_config() -> dict[str, Any]:
    return {"OIDC_LOGOUT_CONSOLE_ADMIN_SUBJECTS": ["1"]}  # alice, the first user seeded


def host_token(idp: ExampleIdP, meta: dict[str, Any], scope: str | None = None) -> str:
    """An access token from the host's own token endpoint (client_credentials)."""
    data = {"grant_type": "client_credentials", "scope": scope or meta["scope"]}
    r = token_request(idp.url, meta, **data)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == (scope or meta["scope"])
    return str(r.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_terminate(idp: ExampleIdP, token: str, **body: Any) -> requests.Response:
    return requests.post(
        f"{idp.url}/oidc/admin/terminations",
        json={"reason": "test", **body},
        headers=bearer(token),
        timeout=30,
    )


def test_a_host_admin_token_terminates_a_subject_revoking_host_tokens_and_writing_deliveries(
    adopted: Any, rp: CaptureServer
) -> None:
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    assert userinfo_status(idp, tokens["access_token"]) == 200
    admin = host_token(idp, OPS, ADMIN_SCOPE)

    r = admin_terminate(idp, admin, sub=alice_sub(idp), wait=5)
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["target"] == {"kind": "subject", "value": alice_sub(idp)}
    assert report["initiator"] == "admin:ops"
    assert report["sessions_ended"] == 1 and report["tokens_revoked"] >= 1
    assert [(d["client_id"], d["channel"]) for d in report["deliveries"]] == [("portal", "backchannel")]
    assert r.headers["Location"].endswith(f"/oidc/admin/terminations/{report['id']}")
    # The host's own token rows are revoked; its own resource protection refuses them.
    assert host_row(idp, tokens["access_token"]).access_token_revoked_at > 0
    assert userinfo_status(idp, tokens["access_token"]) == 401
    assert rp.wait_for(1, 10, path="/portal/backchannel")
    with idp.app.app_context():
        states = db.session.scalars(select(Delivery.state).where(Delivery.termination_id == report["id"]))
        assert list(states) == ["delivered"]
    # The same token reads the audit trail.
    listed = requests.get(f"{idp.url}/oidc/admin/terminations", headers=bearer(admin), timeout=10)
    assert listed.status_code == 200 and [t["id"] for t in listed.json()["terminations"]] == [report["id"]]


def test_a_host_token_without_the_admin_scope_is_insufficient_scope(adopted: Any) -> None:
    idp, _portal = adopted
    r = admin_terminate(idp, host_token(idp, AUDITOR), sub="1")
    # RFC 6750 §3.1: insufficient_scope is 403 and names the scope needed.
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer") and f'scope="{ADMIN_SCOPE}"' in challenge
    # The admin client's token without the admin scope requested is refused the same way.
    r = admin_terminate(idp, host_token(idp, OPS, "ssf.read"), sub="1")
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


def test_a_host_token_revoked_at_the_hosts_revocation_endpoint_is_invalid_token(adopted: Any) -> None:
    idp, _portal = adopted
    admin = host_token(idp, OPS, ADMIN_SCOPE)
    assert (
        requests.get(f"{idp.url}/oidc/admin/deliveries", headers=bearer(admin), timeout=10).status_code == 200
    )
    revoked = revoke(idp, OPS, admin, "access_token")
    assert revoked.status_code == 200
    r = requests.get(f"{idp.url}/oidc/admin/deliveries", headers=bearer(admin), timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # RFC 6750 §3.1: no credentials at all: a challenge without an error code.
    bare = requests.get(f"{idp.url}/oidc/admin/deliveries", timeout=10)
    assert bare.status_code == 401 and "error=" not in bare.headers["WWW-Authenticate"]


def test_a_client_termination_makes_that_clients_host_tokens_unusable_at_once(adopted: Any) -> None:
    """By client_id: a host client that never took part in a session (client_credentials only)
    is terminated; its host token dies at our SSF endpoints in the same commit."""
    idp, _portal = adopted
    auditor = host_token(idp, AUDITOR)
    read = requests.get(f"{idp.url}/oidc/ssf/stream", headers=bearer(auditor), timeout=10)
    assert read.status_code == 200 and read.json() == []

    r = admin_terminate(idp, host_token(idp, OPS, ADMIN_SCOPE), client_id="auditor")
    assert r.status_code == 201, r.text
    assert r.json()["target"] == {"kind": "client", "value": "auditor"}
    assert r.json()["tokens_revoked"] == 1
    read = requests.get(f"{idp.url}/oidc/ssf/stream", headers=bearer(auditor), timeout=10)
    assert read.status_code == 401 and read.json()["error"] == "invalid_token"
    # An unknown client is the host's to know: 404, nothing written.
    r = admin_terminate(idp, host_token(idp, OPS, ADMIN_SCOPE), client_id="nobody")
    assert r.status_code == 404


def test_a_cut_off_refuses_a_host_token_the_terminations_update_did_not_see(adopted: Any) -> None:
    """A token row committed by a concurrent token request, issued before the client's
    cut-off but not revoked by the termination's UPDATE, is refused by the cut-off."""
    idp, _portal = adopted
    r = admin_terminate(idp, host_token(idp, OPS, ADMIN_SCOPE), client_id="receiver")
    assert r.status_code == 201, r.text
    with idp.app.app_context():
        late = "late-" + "x" * 40
        db.session.add(
            OAuth2Token(
                client_id="receiver",
                token_type="Bearer",
                access_token=late,
                scope="ssf.manage",
                issued_at=int(time.time()) - 5,  # issued before the cut-off
                expires_in=3600,
            )
        )
        db.session.commit()
    r = requests.get(f"{idp.url}/oidc/ssf/stream", headers=bearer(late), timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    # RFC 7662 §2.2 on the host's tokens says the same: not active.
    assert introspect(idp, RECEIVER, late) == {"active": False}
    # A token the client obtains after the cut-off works. The host's rows keep whole seconds,
    # so a token of the cut-off's own second counts as issued before it (fail closed): ask
    # for the fresh one in the next second.
    time.sleep(1.05 - time.time() % 1)
    fresh = host_token(idp, RECEIVER)
    assert requests.get(f"{idp.url}/oidc/ssf/stream", headers=bearer(fresh), timeout=10).status_code == 200


def test_an_ssf_stream_is_created_and_polled_with_a_host_token(adopted: Any) -> None:
    idp, portal = adopted
    token = host_token(idp, RECEIVER)
    meta = requests.get(f"{idp.url}/oidc/.well-known/ssf-configuration", timeout=10).json()
    assert meta["configuration_endpoint"] == f"{idp.url}/oidc/ssf/stream"
    assert requests.get(meta["jwks_uri"], timeout=10).json()["keys"]

    r = requests.post(
        meta["configuration_endpoint"],
        json={"events_requested": [SESSION_REVOKED]},
        headers=bearer(token),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    stream = r.json()
    with idp.app.app_context():
        assert db.session.get(Client, "receiver") is not None  # the host client's shadow row

    browser, tokens = signed_in(idp, portal)
    ended = browser.http.get(
        f"{idp.url}/oidc/end_session", params={"id_token_hint": tokens["id_token"]}, timeout=10
    )
    assert ended.status_code == 200
    poll = requests.post(
        stream["delivery"]["endpoint_url"],
        json={"returnImmediately": True, "maxEvents": 10},
        headers=bearer(token),
        timeout=30,
    )
    assert poll.status_code == 200, poll.text
    assert len(poll.json()["sets"]) == 1
    # Another host client sees nothing of that stream (SSF: streams are per receiver).
    other = requests.get(f"{idp.url}/oidc/ssf/stream", headers=bearer(host_token(idp, AUDITOR)), timeout=10)
    assert other.status_code == 200 and other.json() == []


def test_the_console_opens_for_a_listed_subject_signed_in_through_the_host_login(adopted: Any) -> None:
    idp, _portal = adopted
    anonymous = requests.get(f"{idp.url}/oidc/console", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 303 and anonymous.headers["Location"].endswith("/oidc/console/login")

    alice = Browser(idp.url)
    assert alice.login("alice").status_code == 303
    page = alice.http.get(f"{idp.url}/oidc/console", allow_redirects=False, timeout=10)
    assert page.status_code == 200 and "sub:1" in page.text
    dead = alice.http.get(f"{idp.url}/oidc/console/deliveries?state=dead", timeout=10)
    assert dead.status_code == 200

    bob = Browser(idp.url)
    assert bob.login("bob").status_code == 303
    refused = bob.http.get(f"{idp.url}/oidc/console", allow_redirects=False, timeout=10)
    assert refused.status_code == 403 and "not an operator" in refused.text


def test_a_host_grant_id_terminates_that_row_and_ends_no_session(adopted: Any, rp: CaptureServer) -> None:
    """The admin API's ``grant_id`` in extension mode names a host token row
    (``host-token:<table>:<pk>``): its refresh and access tokens die at once, the OP session
    lives on and no RP is told; the same id again gives back the same termination (nothing
    left to revoke: one revocation, one record)."""
    idp, _portal = adopted
    _browser, tokens = signed_in(idp, _portal)
    admin = host_token(idp, OPS, ADMIN_SCOPE)
    grant_id = f"host-token:oauth2_token:{host_row(idp, tokens['access_token']).id}"

    r = admin_terminate(idp, admin, grant_id=grant_id)
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["target"] == {"kind": "grant", "value": grant_id}
    assert report["sessions_ended"] == 0 and report["tokens_revoked"] == 1  # one row: both its tokens
    assert report["deliveries"] == []
    assert introspect(idp, _portal, tokens["refresh_token"]) == {"active": False}
    assert userinfo_status(idp, tokens["access_token"]) == 401
    refreshed = token_request(
        idp.url, _portal, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    with idp.app.app_context():
        assert db.session.scalar(select(OPSession.ended_at)) is None

    again = admin_terminate(idp, admin, grant_id=grant_id)
    assert again.status_code == 201 and again.json()["id"] == report["id"]
    assert not rp.wait_for(1, 0.5, path="/portal/backchannel")


def test_unknown_grant_ids_are_not_found_and_secret_rotation_is_refused_in_extension_mode(
    adopted: Any,
) -> None:
    idp, _portal = adopted
    admin = host_token(idp, OPS, ADMIN_SCOPE)
    for grant_id in ("1", "host-token:oauth2_token:999999", "host-token:oauth2_token:x", "host-token:user:1"):
        r = admin_terminate(idp, admin, grant_id=grant_id)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (grant_id, r.text)
    r = requests.post(
        f"{idp.url}/oidc/admin/clients/webapp/rotate-secret", json={}, headers=bearer(admin), timeout=10
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    doc = requests.get(f"{idp.url}/oidc/admin/openapi.json", timeout=10).json()
    assert doc["servers"] == [{"url": f"{idp.url}/oidc"}]


def test_operator_scopes_come_only_from_the_clients_file(adopted: Any) -> None:
    """RFC 7591 registration never grants an operator scope, and a user-facing client asking
    for one at the authorization endpoint gets a token without it."""
    idp, _portal = adopted
    reg = requests.post(
        f"{idp.url}/oauth/register",
        json={k: v for k, v in service_client("rogue", ADMIN_SCOPE).items() if not k.startswith("client_")},
        headers={"Authorization": f"Bearer {REGISTRATION_TOKEN}"},
        timeout=10,
    )
    assert reg.status_code == 400 and reg.json()["error"] == "invalid_client_metadata"
    assert "scope" in reg.json()["error_description"]

    browser = Browser(idp.url)
    assert browser.login("alice").status_code == 303
    flow = run_code_flow(browser, WEBAPP, scope=f"openid {ADMIN_SCOPE}")
    tokens = exchange(idp.url, WEBAPP, flow)
    assert tokens.status_code == 200, tokens.text
    assert ADMIN_SCOPE not in tokens.json()["scope"].split()
    r = admin_terminate(idp, tokens.json()["access_token"], sub="2")
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


# -- OAuth 2.0 Global Token Revocation on the host's users ----------------------------------------
def gtr(idp: ExampleIdP, token: str, sub_id: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{idp.url}/oidc/global-token-revocation", json={"sub_id": sub_id}, headers=bearer(token), timeout=30
    )


def test_global_token_revocation_terminates_a_host_user_everywhere(adopted: Any, rp: CaptureServer) -> None:
    """draft-parecki-oauth-global-token-revocation §3.3 in extension mode: a security tool's
    host token with the scope revokes every token of the host's user (a row issued outside any
    OP session too), ends the OP session and tells the RP; the host's discovery advertises
    the endpoint (its merged metadata)."""
    idp, portal = adopted
    _browser, tokens = signed_in(idp, portal)
    sub = alice_sub(idp)
    with idp.app.app_context():  # a token row of alice that no OP session knows (before adoption)
        db.session.add(
            OAuth2Token(
                user_id=int(sub),
                client_id="webapp",
                token_type="Bearer",
                access_token="pre-adoption-" + "a" * 30,
                scope="openid",
                issued_at=int(time.time()),
                expires_in=3600,
            )
        )
        db.session.commit()
    assert userinfo_status(idp, "pre-adoption-" + "a" * 30) == 200
    doc = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert doc["global_token_revocation_endpoint"] == f"{idp.url}/oidc/global-token-revocation"

    r = gtr(idp, host_token(idp, SECOPS), {"format": "opaque", "id": sub})
    assert r.status_code == 204, r.text
    for token in (tokens["access_token"], "pre-adoption-" + "a" * 30):
        assert userinfo_status(idp, token) == 401
    assert introspect(idp, portal, tokens["refresh_token"]) == {"active": False}
    assert rp.wait_for(1, 10, path="/portal/backchannel")
    with idp.app.app_context():
        assert db.session.scalar(select(OPSession.ended_at)) is not None
        (term,) = db.session.scalars(select(Termination)).all()
        assert (term.target_kind, term.target_value) == ("subject", sub)
        assert term.initiator == "global_token_revocation:secops" and term.include_offline


def test_global_token_revocation_refuses_what_it_cannot_resolve(adopted: Any) -> None:
    """§3.4: an unknown user is 404, a format this server cannot resolve is 400 (no directory
    maps an email address to the host's users), another issuer's subject is 404; a token
    without the scope is 403. Nothing is terminated."""
    idp, _portal = adopted
    secops = host_token(idp, SECOPS)
    assert gtr(idp, secops, {"format": "opaque", "id": "999999"}).status_code == 404
    assert (
        gtr(idp, secops, {"format": "iss_sub", "iss": "https://elsewhere.example", "sub": "1"}).status_code
        == 404
    )
    email = gtr(idp, secops, {"format": "email", "email": "alice@example.com"})
    assert email.status_code == 400 and email.json()["error"] == "invalid_request"
    assert gtr(idp, host_token(idp, OPS, ADMIN_SCOPE), {"format": "opaque", "id": "1"}).status_code == 403
    with idp.app.app_context():
        assert db.session.scalars(select(Termination)).all() == []
