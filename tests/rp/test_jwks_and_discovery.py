"""JWKS caching, key rotation and discovery against a real loopback OP."""

from __future__ import annotations

import json

import pytest
from werkzeug.wrappers import Response

from oidc_logout.rp import (
    DiscoveryClient,
    DiscoveryError,
    JWKSCache,
    LogoutTokenError,
    LogoutTokenValidator,
)
from oidc_logout.rp._http import HTTPLimits

from .conftest import Clock, FakeOP
from .tokens import CLIENT_ID, logout_token, rsa_key


def make(op: FakeOP, clock: Clock, **jwks_kw: object) -> tuple[LogoutTokenValidator, JWKSCache]:
    discovery = DiscoveryClient(op.issuer, clock=clock)
    keys = JWKSCache(discovery=discovery, clock=clock, **jwks_kw)  # type: ignore[arg-type]
    return LogoutTokenValidator(issuer=op.issuer, client_id=CLIENT_ID, keys=keys, clock=clock), keys


def test_jwks_is_found_through_discovery_and_cached_without_network_calls_per_token(
    op: FakeOP, clock: Clock
) -> None:
    validator, keys = make(op, clock)
    for _ in range(5):
        validator.validate(logout_token(op.issuer, now=clock()))
    assert op.requests["/jwks"] == 1
    assert op.requests["/.well-known/openid-configuration"] == 1
    assert keys.fetch_count == 1


def test_rotated_key_validates_after_exactly_one_refetch(op: FakeOP, clock: Clock) -> None:
    validator, _ = make(op, clock, unknown_kid_refetch_interval=30)
    validator.validate(logout_token(op.issuer, now=clock()))
    op.keys = [rsa_key("k2")]  # the OP rotates
    clock.advance(31)
    validator.validate(logout_token(op.issuer, rsa_key("k2"), now=clock()))
    assert op.requests["/jwks"] == 2
    validator.validate(logout_token(op.issuer, rsa_key("k2"), now=clock()))
    assert op.requests["/jwks"] == 2


def test_flood_of_unknown_kids_refetches_at_most_once_per_interval(op: FakeOP, clock: Clock) -> None:
    validator, _ = make(op, clock, unknown_kid_refetch_interval=30)
    validator.validate(logout_token(op.issuer, now=clock()))
    clock.advance(31)
    for i in range(20):
        with pytest.raises(LogoutTokenError) as info:
            validator.validate(logout_token(op.issuer, rsa_key(f"bogus{i % 2}"), now=clock()))
        assert info.value.reason == "unknown_kid"
    assert op.requests["/jwks"] == 2  # initial fetch + one refetch for the whole flood


def test_jwks_cache_follows_max_age_within_bounds(op: FakeOP, clock: Clock) -> None:
    op.jwks_cache_control = "public, max-age=100"
    validator, _ = make(op, clock, min_ttl=10, max_ttl=1000)
    validator.validate(logout_token(op.issuer, now=clock()))
    clock.advance(99)
    validator.validate(logout_token(op.issuer, now=clock()))
    assert op.requests["/jwks"] == 1
    clock.advance(2)
    validator.validate(logout_token(op.issuer, now=clock()))
    assert op.requests["/jwks"] == 2


def test_no_store_jwks_is_still_cached_for_the_minimum_ttl(op: FakeOP, clock: Clock) -> None:
    op.jwks_cache_control = "no-store"
    validator, _ = make(op, clock, min_ttl=30)
    validator.validate(logout_token(op.issuer, now=clock()))
    validator.validate(logout_token(op.issuer, now=clock()))
    assert op.requests["/jwks"] == 1


def test_jwks_unreachable_gives_its_own_reason(clock: Clock) -> None:
    keys = JWKSCache("http://127.0.0.1:9/jwks", clock=clock, limits=HTTPLimits(0.5, 0.5))
    validator = LogoutTokenValidator(issuer="http://127.0.0.1:9", client_id=CLIENT_ID, keys=keys, clock=clock)
    with pytest.raises(LogoutTokenError) as info:
        validator.validate(logout_token("http://127.0.0.1:9", now=clock()))
    assert info.value.reason == "jwks_unavailable"


def test_symmetric_keys_in_the_jwks_are_never_used(op: FakeOP, clock: Clock) -> None:
    op.extra_routes["/jwks-oct"] = lambda req: Response(
        json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}), mimetype="application/json"
    )
    keys = JWKSCache(op.issuer + "/jwks-oct", clock=clock)
    with pytest.raises(LogoutTokenError) as info:
        keys.keys_for("k1", "RS256")
    assert info.value.reason == "unknown_kid"


def test_discovery_with_a_different_issuer_is_rejected(op: FakeOP, clock: Clock) -> None:
    op.discovery_overrides["issuer"] = op.issuer + "/"
    with pytest.raises(DiscoveryError) as info:
        DiscoveryClient(op.issuer, clock=clock).get()
    assert info.value.reason == "issuer_mismatch"


def test_discovery_is_cached(op: FakeOP, clock: Clock) -> None:
    client = DiscoveryClient(op.issuer, clock=clock)
    meta = client.get()
    assert client.get() is meta
    assert meta.jwks_uri == op.issuer + "/jwks"
    assert op.requests["/.well-known/openid-configuration"] == 1


def test_oversized_response_is_refused(op: FakeOP, clock: Clock) -> None:
    op.extra_routes["/big"] = lambda req: Response(
        json.dumps({"keys": [], "pad": "x" * 5000}), mimetype="application/json"
    )
    keys = JWKSCache(op.issuer + "/big", clock=clock, limits=HTTPLimits(max_bytes=1024))
    with pytest.raises(LogoutTokenError) as info:
        keys.keys_for("k1", "RS256")
    assert info.value.reason == "jwks_unavailable"


def test_redirects_are_not_followed(op: FakeOP, clock: Clock) -> None:
    op.extra_routes["/moved"] = lambda req: Response(
        "", status=302, headers={"Location": op.issuer + "/jwks"}
    )
    keys = JWKSCache(op.issuer + "/moved", clock=clock)
    with pytest.raises(LogoutTokenError):
        keys.keys_for("k1", "RS256")
    assert op.requests["/jwks"] == 0


def test_plain_http_to_a_non_loopback_issuer_is_refused() -> None:
    with pytest.raises(DiscoveryError) as info:
        DiscoveryClient("http://op.example")
    assert info.value.reason == "insecure_url"
