"""Issue 12 items 10 and 14 on the validator: the registered algorithm only (Back-Channel
Logout 1.0 §2.6 step 3 → OIDC Core §3.1.3.7 step 7), and hostile tokens that are *signed
correctly* (so they reach the claim checks) but carry NaN/Infinity or deep nesting."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from oidc_logout.rp import LogoutTokenError, LogoutTokenValidator, StaticKeys

from .tokens import CLIENT_ID, NOW, claims, ec_key, logout_token, public_jwks, rsa_key, sign

ISS = "https://op.example"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def validator(**kw: Any) -> LogoutTokenValidator:
    # The OP publishes an RSA *and* a P-256 key, as real OPs do.
    keys = StaticKeys(public_jwks(rsa_key("k1"), ec_key("e1")))
    kw.setdefault("replay_cache", False)
    return LogoutTokenValidator(issuer=ISS, client_id=CLIENT_ID, keys=keys, clock=lambda: NOW, **kw)


# -- item 10: alg defaults to the registered one, RS256 -------------------------------------


def test_es256_token_is_refused_when_the_client_registered_the_default_rs256() -> None:
    """§2.6 step 3 / Core §3.1.3.7 step 7: a client registered without id_token_signed_response_alg
    uses RS256, so an ES256 token signed with a *published* P-256 key must be refused."""
    token = logout_token(ISS, ec_key("e1"), alg="ES256")
    with pytest.raises(LogoutTokenError) as info:
        validator().validate(token)
    assert info.value.reason == "alg_not_allowed"


def test_default_allowlist_is_rs256_only() -> None:
    assert validator().allowed_algs == ("RS256",)
    validator().validate(logout_token(ISS))


def test_registered_alg_is_accepted_and_rs256_then_refused() -> None:
    v = validator(allowed_algs=["ES256"])
    v.validate(logout_token(ISS, ec_key("e1"), alg="ES256"))
    with pytest.raises(LogoutTokenError) as info:
        v.validate(logout_token(ISS))
    assert info.value.reason == "alg_not_allowed"


def test_unknown_or_symmetric_algs_cannot_be_configured() -> None:
    for alg in ("none", "HS256", "ES256K", "rs256", ""):
        with pytest.raises(ValueError):
            validator(allowed_algs=[alg])


# -- item 14: NaN/Infinity, huge numbers, deep nesting -------------------------------------


def raw_signed(payload: str) -> str:
    """A real RS256 signature over an arbitrary payload text."""
    return sign(payload, rsa_key("k1"))


def payload_with(**raw_values: str) -> str:
    """Valid claims, with some members' JSON text replaced verbatim (e.g. ``NaN``)."""
    c = claims(ISS)
    text = json.dumps(c)
    for name, raw in raw_values.items():
        text = text.replace(f'"{name}": {json.dumps(c[name])}', f'"{name}": {raw}')
        assert f'"{name}": {raw}' in text
    return text


@pytest.mark.parametrize(
    ("claim", "raw"),
    [
        ("exp", "NaN"),
        ("exp", "Infinity"),
        ("exp", "-Infinity"),
        ("exp", "1e400"),
        ("iat", "NaN"),
        ("iat", "-Infinity"),
        ("iat", "-1e400"),
        ("exp", "1" + "0" * 400),  # an int no float can hold: exp + leeway overflowed
    ],
)
def test_non_finite_or_huge_numeric_dates_are_refused(claim: str, raw: str) -> None:
    """RFC 8259 §6 has no NaN/Infinity; "now >= NaN" is False, so a NaN exp never expired."""
    token = raw_signed(payload_with(**{claim: raw}))
    with pytest.raises(LogoutTokenError) as info:
        validator().validate(token)
    assert type(info.value) is LogoutTokenError
    assert info.value.reason in {"malformed", "exp_missing", "iat_missing"}


@pytest.mark.parametrize("where", ["header", "payload"])
@pytest.mark.parametrize("depth", [1500, 2600])
def test_deeply_nested_json_raises_only_logout_token_error(where: str, depth: int) -> None:
    """A nesting depth that fits in 8 KiB but exhausts json's recursion limit."""
    nested = "[" * depth + "]" * depth
    if where == "header":
        header = '{"alg":"RS256","kid":"k1","x":' + nested + "}"
        token = f"{b64(header.encode())}.{b64(json.dumps(claims(ISS)).encode())}.AAAA"
    else:
        token = raw_signed(json.dumps(claims(ISS))[:-1] + ', "x": ' + nested + "}")
    assert len(token) <= 8 * 1024
    with pytest.raises(LogoutTokenError) as info:
        validator().validate(token)
    assert info.value.reason == "malformed"


def test_failing_replay_cache_surfaces_as_logout_token_error() -> None:
    """validate() raises only LogoutTokenError: storage trouble is the 503 subclass."""
    from oidc_logout.rp.errors import LogoutUnavailableError

    class Down:
        def add_if_absent(self, iss: str, jti: str, expires_at: float) -> bool:
            raise ConnectionError("redis is down")

    with pytest.raises(LogoutUnavailableError) as info:
        validator(replay_cache=Down()).validate(logout_token(ISS))
    assert isinstance(info.value, LogoutTokenError) and info.value.status == 503


def test_failing_key_provider_surfaces_as_logout_token_error() -> None:
    class Broken:
        def keys_for(self, kid: str | None, alg: str) -> list[Any]:
            raise RuntimeError("boom")

    v = LogoutTokenValidator(issuer=ISS, client_id=CLIENT_ID, keys=Broken(), clock=lambda: NOW)
    with pytest.raises(LogoutTokenError):
        v.validate(logout_token(ISS))
