"""Back-channel logout requests and logout tokens as received by the runner's RP endpoints:
Back-Channel Logout 1.0 §2.4 (token), §2.5 (request), §2.7 (refresh tokens)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from jwcrypto import jwk, jws

from ..model import Recorder
from ..opclient import OPClient, Tokens
from ..receivers import Captured
from ..redact import decode_jwt

EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Clock skew tolerated between the OP and the runner (seconds).
SKEW = 300


@dataclass
class Delivery:
    client: OPClient
    request: Captured
    token: str | None = None
    header: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    form_problems: list[str] = field(default_factory=list)

    def evidence(self) -> dict[str, Any]:
        return {
            "client_id": self.client.client_id,
            "method": self.request.method,
            "content_type": self.request.header("Content-Type"),
            "logout_token": {"header": self.header, "claims": self.claims, "signature": "[REDACTED]"}
            if self.token
            else None,
        }


def parse_delivery(client: OPClient, req: Captured) -> Delivery:
    """Extract the logout token leniently (form, else JSON) so the token checks still run
    when only the encoding is wrong; encoding problems are collected for BCL-2.5-form-post."""
    d = Delivery(client, req)
    ctype = (req.header("Content-Type") or "").split(";", 1)[0].strip().lower()
    body = req.body.decode("utf-8", "replace")
    if req.method != "POST":
        d.form_problems.append(f"method is {req.method}, not POST")
    if ctype != "application/x-www-form-urlencoded":
        d.form_problems.append(
            f"Content-Type is {ctype or 'absent'!r}, not application/x-www-form-urlencoded"
        )
    values: list[str] = []
    if ctype == "application/x-www-form-urlencoded":
        form = parse_qs(body, keep_blank_values=True)
        values = form.get("logout_token", [])
        if len(values) != 1:
            d.form_problems.append(f"{len(values)} logout_token parameters, expected exactly one")
        others = sorted(set(form) - {"logout_token"})
        if others:
            d.form_problems.append(f"unexpected form parameters {others}")
    else:
        try:
            obj = json.loads(body)
            if isinstance(obj, dict) and isinstance(obj.get("logout_token"), str):
                values = [obj["logout_token"]]
        except ValueError:
            form = parse_qs(body)
            values = form.get("logout_token", [])
    if values:
        d.token = values[0]
        dec = decode_jwt(d.token)
        d.header = dec["header"] if isinstance(dec.get("header"), dict) else {}
        d.claims = dec["claims"] if isinstance(dec.get("claims"), dict) else {}
    return d


def _verify(token: str, header: dict[str, Any], keyset: jwk.JWKSet) -> str | None:
    """None when the signature verifies with the JWKS key named by kid, else the problem."""
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        return "unsigned token (alg none)"
    candidates = [k for k in keyset["keys"] if kid is None or k.get("kid") == kid]
    if kid is not None and not candidates:
        return f"kid {kid!r} is not in the OP's JWKS"
    problem = None  # kid is optional when the signature verifies with a JWKS key
    for key in candidates:
        try:
            sig = jws.JWS()
            sig.deserialize(token)
            sig.allowed_algs = [alg]
            sig.verify(key, alg=alg)
            return problem
        except Exception:  # noqa: S112 - a key that does not verify it: try the next one
            continue
    return "signature does not verify with the OP's JWKS"


def check_deliveries(
    rec: Recorder,
    issuer: str,
    expected: list[Tokens],
    deliveries: list[Delivery],
    keyset: jwk.JWKSet | None,
    waited: float,
    session_sid_required: bool,
) -> None:
    by_client: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_client.setdefault(d.client.client_id, []).append(d)
    missing = [t.client.client_id for t in expected if not by_client.get(t.client.client_id)]
    rec.verdict(
        "BCL-2.5-delivered",
        [f"no logout request for {', '.join(missing)} within {waited:.1f}s"] if missing else [],
        evidence={
            "expected": [t.client.client_id for t in expected],
            "received": {k: len(v) for k, v in by_client.items()},
        },
    )
    if not deliveries:
        for cid in (
            "BCL-2.5-form-post",
            "BCL-2.4-alg",
            "BCL-2.4-signature",
            "BCL-2.4-typ",
            "BCL-2.4-iss",
            "BCL-2.4-aud",
            "BCL-2.4-iat",
            "BCL-2.4-exp",
            "BCL-2.4-jti",
            "BCL-2.4-events",
            "BCL-2.4-sid-sub",
            "BCL-2.4-no-nonce",
            "BCL-2.4-sid-match",
            "BCL-2.4-jti-unique",
            "BCL-2.5-one-per-rp",
        ):
            rec.skip(cid, "no back-channel logout request was received")
        return
    ev = [d.evidence() for d in deliveries]
    tokens_by_client = {t.client.client_id: t for t in expected}

    def per(check_id: str, fn: Any) -> None:
        failures: list[str] = []
        for d in deliveries:
            if d.token is None:
                failures.append(f"{d.client.client_id}: no logout_token found in the request")
                continue
            failures.extend(f"{d.client.client_id}: {p}" for p in fn(d))
        rec.verdict(check_id, failures, evidence={"deliveries": ev})

    rec.verdict(
        "BCL-2.5-form-post",
        [f"{d.client.client_id}: {p}" for d in deliveries for p in d.form_problems],
        evidence={"deliveries": ev},
    )

    def alg(d: Delivery) -> list[str]:
        a = d.header.get("alg")
        want = tokens_by_client.get(d.client.client_id)
        want_alg = (want.id_header.get("alg") if want else None) or d.client.metadata.get(
            "id_token_signed_response_alg", "RS256"
        )
        if not isinstance(a, str) or a.lower() == "none":
            return [f"alg is {a!r}: logout tokens MUST be signed"]
        if a != want_alg:
            return [f"alg is {a}, the client's ID tokens use {want_alg}"]
        return []

    per("BCL-2.4-alg", alg)
    if keyset is None:
        rec.skip("BCL-2.4-signature", "the OP's JWKS could not be fetched")
    else:
        per("BCL-2.4-signature", lambda d: [p] if (p := _verify(d.token or "", d.header, keyset)) else [])
    per(
        "BCL-2.4-typ",
        lambda d: (
            []
            if str(d.header.get("typ", "")).lower() in ("logout+jwt", "application/logout+jwt")
            else [f"typ is {d.header.get('typ')!r}, logout+jwt is recommended"]
        ),
    )
    per("BCL-2.4-iss", lambda d: [] if d.claims.get("iss") == issuer else [f"iss is {d.claims.get('iss')!r}"])

    def aud(d: Delivery) -> list[str]:
        a = d.claims.get("aud")
        ok = a == d.client.client_id or (isinstance(a, list) and d.client.client_id in a)
        return [] if ok else [f"aud is {a!r}, expected {d.client.client_id!r}"]

    per("BCL-2.4-aud", aud)

    def _num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def iat(d: Delivery) -> list[str]:
        v = d.claims.get("iat")
        if not _num(v):
            return [f"iat is missing or not a number ({v!r})"]
        assert isinstance(v, (int, float))
        if abs(v - d.request.at) > SKEW:
            return [f"iat is {v - d.request.at:+.0f}s from the time of delivery"]
        return []

    per("BCL-2.4-iat", iat)

    def exp(d: Delivery) -> list[str]:
        v, i = d.claims.get("exp"), d.claims.get("iat")
        if v is None:
            return ["exp is missing (REQUIRED since errata 1)"]
        if not _num(v):
            return [f"exp is not a number ({v!r})"]
        out = []
        if _num(i) and v <= i:
            out.append("exp is not after iat")
        if v + SKEW < d.request.at:
            out.append("the token had expired when it was delivered")
        return out

    per("BCL-2.4-exp", exp)
    per(
        "BCL-2.4-jti",
        lambda d: (
            []
            if isinstance(d.claims.get("jti"), str) and d.claims["jti"]
            else [f"jti is {d.claims.get('jti')!r}"]
        ),
    )

    def events(d: Delivery) -> list[str]:
        e = d.claims.get("events")
        if not isinstance(e, dict):
            return [f"events is {'missing' if e is None else type(e).__name__}, not a JSON object"]
        if EVENT not in e:
            return [f"events lacks the member {EVENT}"]
        if not isinstance(e[EVENT], dict):
            return [f"the events member value is {type(e[EVENT]).__name__}, not a JSON object"]
        return []

    per("BCL-2.4-events", events)
    per(
        "BCL-2.4-sid-sub",
        lambda d: [] if (d.claims.get("sid") or d.claims.get("sub")) else ["neither sid nor sub is present"],
    )
    per("BCL-2.4-no-nonce", lambda d: ["a nonce claim is present"] if "nonce" in d.claims else [])

    def match(d: Delivery) -> list[str]:
        t = tokens_by_client.get(d.client.client_id)
        if t is None:
            return []
        out = []
        want_sid, want_sub = t.id_claims.get("sid"), t.id_claims.get("sub")
        if "sid" in d.claims and d.claims["sid"] != want_sid:
            out.append("sid differs from the ID token's sid")
        if "sub" in d.claims and d.claims["sub"] != want_sub:
            out.append("sub differs from the ID token's sub")
        if session_sid_required and want_sid and "sid" not in d.claims:
            out.append("no sid although backchannel_logout_session_required was registered")
        return out

    per("BCL-2.4-sid-match", match)
    jtis = [str(d.claims["jti"]) for d in deliveries if d.claims.get("jti")]
    dupes = sorted({j for j in jtis if jtis.count(j) > 1})
    rec.verdict(
        "BCL-2.4-jti-unique",
        [f"{len(dupes)} jti value(s) used more than once"] if dupes else [],
        evidence={"tokens": len(jtis), "distinct": len(set(jtis))},
    )
    many = {k: len(v) for k, v in by_client.items() if len(v) > 1}
    rec.verdict(
        "BCL-2.5-one-per-rp",
        [f"{k} received {n} logout requests" for k, n in many.items()],
        evidence={"received": {k: len(v) for k, v in by_client.items()}},
    )
