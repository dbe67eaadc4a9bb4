"""RP-Initiated Logout 1.0: errors mean no redirect and no termination; the confirmation page
guards logouts without id_token_hint (§6)."""

from __future__ import annotations

import base64
import json
import re
import time

from jwcrypto import jwk, jwt
from sqlalchemy import func, select

from oidc_logout.storage.models import Delivery, OPSession, Termination
from tests.support.idp import Browser, authorize, introspect

from .conftest import RP_NAMES


def _login(env, names=RP_NAMES):
    browser = Browser(env.idp.url)
    browser.login()
    return browser, {n: authorize(browser, env.metas[n]) for n in names}


def _state_unchanged(env, tokens):
    with env.idp.provider.session_factory() as db:
        assert db.scalar(select(func.count()).select_from(Termination)) == 0
        assert (
            db.scalar(select(func.count()).select_from(OPSession).where(OPSession.ended_at.is_not(None))) == 0
        )
        # Notifications are only ever sent from outbox rows: with none written, none can come
        # later (no sleeping to watch for one).
        assert db.scalar(select(func.count()).select_from(Delivery)) == 0
    assert introspect(env.idp.url, env.metas["rp-a"], tokens["rp-a"]["access_token"])["active"] is True
    assert env.rps.requests == []


def _forge(claims: dict, key: jwk.JWK | None = None) -> str:
    key = key or jwk.JWK.generate(kty="RSA", size=2048, kid="attacker")
    tok = jwt.JWT(header={"alg": "RS256", "kid": key.get("kid", "k")}, claims=claims)
    tok.make_signed_token(key)
    return tok.serialize()


def _claims(id_token: str) -> dict:
    p = id_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def _get(browser, env, **params):
    return browser.http.get(f"{env.idp.url}/end_session", params=params, allow_redirects=False, timeout=10)


def test_forged_id_token_hint_gives_error_without_redirect_or_termination(env):
    """rpinitiated §2: the OP MUST validate it issued the hint; §4: no redirect on error."""
    browser, tokens = _login(env)
    forged = _forge(_claims(tokens["rp-a"]["id_token"]))
    resp = _get(
        browser,
        env,
        id_token_hint=forged,
        post_logout_redirect_uri=env.metas["rp-a"]["post_logout_redirect_uris"][0],
        state="s",
    )
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "invalid_request" in resp.text
    _state_unchanged(env, tokens)


def test_tampered_id_token_hint_is_refused(env):
    """A hint whose payload was changed no longer verifies."""
    browser, tokens = _login(env)
    h, _p, s = tokens["rp-a"]["id_token"].split(".")
    claims = _claims(tokens["rp-a"]["id_token"])
    claims["sub"] = "bob"
    p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    resp = _get(browser, env, id_token_hint=f"{h}.{p2}.{s}")
    assert resp.status_code == 400 and "Location" not in resp.headers
    _state_unchanged(env, tokens)


def test_unregistered_post_logout_redirect_uri_gives_error_and_no_termination(env):
    """rpinitiated §3: no redirect to an unregistered URI; we refuse the request outright."""
    browser, tokens = _login(env)
    resp = _get(
        browser,
        env,
        id_token_hint=tokens["rp-a"]["id_token"],
        post_logout_redirect_uri="http://127.0.0.1:20000/elsewhere",
        state="s",
    )
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "not registered" in resp.text
    _state_unchanged(env, tokens)


def test_client_id_not_matching_the_hint_gives_error_and_no_termination(env):
    """rpinitiated §2: client_id MUST match the hint's aud."""
    browser, tokens = _login(env)
    resp = _get(
        browser,
        env,
        id_token_hint=tokens["rp-a"]["id_token"],
        client_id="rp-b",
        post_logout_redirect_uri=env.metas["rp-a"]["post_logout_redirect_uris"][0],
    )
    assert resp.status_code == 400 and "Location" not in resp.headers
    _state_unchanged(env, tokens)


def test_expired_id_token_hint_from_this_op_is_accepted(env):
    """rpinitiated §2: the OP SHOULD accept its own ID tokens after exp."""
    browser, tokens = _login(env)
    key = env.idp.provider.keyring.signing_key("RS256")
    claims = _claims(tokens["rp-a"]["id_token"])
    claims["exp"] = int(time.time()) - 3600
    tok = jwt.JWT(header={"alg": "RS256", "kid": key.kid}, claims=claims)
    tok.make_signed_token(key.key)
    resp = _get(
        browser,
        env,
        id_token_hint=tok.serialize(),
        state="s",
        post_logout_redirect_uri=env.metas["rp-a"]["post_logout_redirect_uris"][0],
    )
    assert resp.status_code == 302 and "state=s" in resp.headers["Location"]


def test_logout_without_hint_asks_for_confirmation_then_ends_the_session(env):
    """rpinitiated §6: without a valid id_token_hint the End-User confirms (CSRF-protected)."""
    browser, tokens = _login(env)
    page = _get(browser, env, client_id="rp-a")
    assert page.status_code == 200 and 'name="confirm"' in page.text
    _state_unchanged(env, tokens)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    bad = browser.http.post(
        f"{env.idp.url}/end_session",
        data={"confirm": "yes", "csrf_token": "nope", "client_id": "rp-a"},
        timeout=10,
    )
    assert bad.status_code == 200 and 'name="confirm"' in bad.text  # asked again, nothing ended
    _state_unchanged(env, tokens)
    ok = browser.http.post(
        f"{env.idp.url}/end_session",
        data={"confirm": "yes", "csrf_token": csrf, "client_id": "rp-a"},
        allow_redirects=False,
        timeout=10,
    )
    assert ok.status_code == 200 and "signed out" in ok.text
    assert introspect(env.idp.url, env.metas["rp-a"], tokens["rp-a"]["access_token"]) == {"active": False}
    assert len(env.rps.hits("/rp-b")) == 1


def test_logout_page_is_not_cacheable_and_has_a_strict_csp(env):
    """The confirmation and logged-out pages are no-store with a restrictive CSP."""
    browser, _ = _login(env)
    page = _get(browser, env)
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_hint_whose_sid_the_client_never_took_part_in_is_treated_as_suspect(env):
    """rpinitiated §2: a hint whose sid does not correspond to the RP's session is suspect:
    no silent logout of that session, no redirect; the End-User is asked instead."""
    victim_browser, victim = _login(env, names=("rp-b",))
    victim_sid = _claims(victim["rp-b"]["id_token"])["sid"]
    _attacker_browser, attacker = _login(env, names=("rp-a",))
    key = env.idp.provider.keyring.signing_key("RS256")
    claims = _claims(attacker["rp-a"]["id_token"])
    claims["sid"] = victim_sid  # a genuine OP signature, but rp-a never took part in that session
    tok = jwt.JWT(header={"alg": "RS256", "kid": key.kid}, claims=claims)
    tok.make_signed_token(key.key)
    resp = _get(
        victim_browser,
        env,
        id_token_hint=tok.serialize(),
        state="s",
        post_logout_redirect_uri=env.metas["rp-a"]["post_logout_redirect_uris"][0],
    )
    assert resp.status_code == 200 and 'name="confirm"' in resp.text and "Location" not in resp.headers
    assert introspect(env.idp.url, env.metas["rp-b"], victim["rp-b"]["access_token"])["active"] is True
