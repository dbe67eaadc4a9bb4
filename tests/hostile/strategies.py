"""Hypothesis strategies for hostile input: garbage forms, headers, JSON and JWTs.

Sizes are bounded so that a property run stays within a few seconds; the deep-nesting and
huge-header cases are explicit (they are the ones parsers choke on).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from hypothesis import strategies as st


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Header values must be latin-1 and single-line, or the *client* refuses to send them.
header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=200
)
# Form values: anything, including NUL, surrogate-free unicode and control characters.
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)

#: The class of issue 12 item 6: quotes, backslash, DEL, NUL, CR/LF and other controls (C0 and
#: C1), non-ASCII (Latin-1, BMP, astral, bidi overrides, line/paragraph separators, BOM) -
#: each rare in ``any_text``'s uniform draw, so drawn on purpose here.
NASTY_CHARS = [
    '"',
    "'",
    "\\",
    "\x7f",
    "\x00",
    "\r",
    "\n",
    "\r\n",
    "\t",
    "\x0b",
    "\x1b",
    "\x85",
    "\xa0",
    "\xe9",
    "\xff",
    "\u0100",
    "\u202e",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\u2603",
    "\U0001f600",
    "%",
    "%00",
    "%0d%0a",
    "%ff",
    "<",
    ">",
    "&",
    "#",
    "?",
    "/",
    "//",
    "@",
    ";",
    " ",
    "+",
    "=",
    "..",
]
nasty_char = st.sampled_from(NASTY_CHARS)
nasty_text = st.one_of(
    st.lists(nasty_char | st.text("abcXYZ019-_.:/", max_size=4), min_size=1, max_size=12).map("".join),
    any_text,
)


@st.composite
def nastier(draw: Any, valid: str) -> str:
    """``valid`` with nasty characters inserted, appended, or in its place: gets past checks
    that look only at a prefix or at the shape."""
    how = draw(st.integers(0, 3))
    if how == 0:
        return draw(nasty_text)
    bad = draw(st.lists(nasty_char, min_size=1, max_size=3).map("".join))
    if how == 1:
        return valid + bad
    if how == 2:
        return bad + valid
    at = draw(st.integers(0, len(valid)))
    return valid[:at] + bad + valid[at:]


@st.composite
def hostile_params(draw: Any, valid: dict[str, str], extra_keys: list[str] | None = None) -> dict[str, str]:
    """A request's parameters: each valid one kept, dropped or made nasty, plus nasty extras."""
    out: dict[str, str] = {}
    for key, value in valid.items():
        choice = draw(st.integers(0, 3))
        if choice == 0:
            continue
        out[key] = value if choice == 1 else draw(nastier(value))
    for key in draw(st.lists(st.sampled_from(extra_keys or ["x"]) | nasty_text, max_size=3)):
        out[key] = draw(nasty_text)
    return out


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=20,
)


@st.composite
def deep_json(draw: Any) -> str:
    """Deeply nested arrays/objects: json.loads raises RecursionError, not ValueError."""
    depth = draw(st.integers(500, 6000))
    kind = draw(st.sampled_from(["array", "object"]))
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def content_types() -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=utf-8",
                "application/json",
                "text/plain",
                "multipart/form-data; boundary=x",
                "application/x-www-form-urlencoded; charset=utf-16",
                "application/jwt",
                "",
                "*/*",
                "APPLICATION/X-WWW-FORM-URLENCODED",
            ]
        ),
        header_text,
    )


def authorization(valid_basic: list[str] | None = None) -> st.SearchStrategy[str | None]:
    """Authorization header garbage (and, optionally, some valid Basic credentials)."""
    creds = st.tuples(any_text, any_text).map(lambda t: f"{t[0]}:{t[1]}".encode("utf-8", "surrogatepass"))
    options = [
        st.none(),
        header_text,
        st.binary(max_size=80).map(lambda b: "Basic " + base64.b64encode(b).decode()),
        creds.map(lambda b: "Basic " + base64.b64encode(b).decode()),
        st.sampled_from(
            [
                "Basic",
                "Basic ",
                "Basic ====",
                "Basic !!!",
                "Bearer",
                "Bearer ",
                "Basic " + "A" * 5000,
                "basic Zm9vOmJhcg==",
                "Digest x=y",
                "Basic Og==",
                "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
            ]
        ),
        header_text.map(lambda s: "Bearer " + s),
    ]
    if valid_basic:
        options.append(st.sampled_from(valid_basic))
    return st.one_of(*options)


# --------------------------------------------------------------------------- JWTs

HEADER_KEYS = [
    "alg",
    "kid",
    "typ",
    "cty",
    "jku",
    "jwk",
    "x5u",
    "x5c",
    "crit",
    "b64",
    "zip",
    "enc",
    "p2c",
    "p2s",
]
CLAIM_KEYS = [
    "iss",
    "aud",
    "sub",
    "sid",
    "iat",
    "exp",
    "nbf",
    "jti",
    "events",
    "nonce",
    "azp",
    "auth_time",
    "acr",
]
ALGS = ["none", "None", "NONE", "RS256", "ES256", "HS256", "HS512", "PS256", "EdDSA", "RSA-OAEP", "dir", ""]


def _segment(obj_or_raw: Any) -> str:
    if isinstance(obj_or_raw, bytes):
        return b64u(obj_or_raw)
    if isinstance(obj_or_raw, str):
        return b64u(obj_or_raw.encode("utf-8", "surrogatepass"))
    return b64u(json.dumps(obj_or_raw).encode())


@st.composite
def jwt_header(draw: Any) -> Any:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        h = draw(st.dictionaries(st.sampled_from(HEADER_KEYS), json_values, max_size=6))
        if draw(st.booleans()):
            h["alg"] = draw(st.sampled_from(ALGS) | json_values)
        return h
    if choice == 1:
        return draw(deep_json())
    if choice == 2:  # huge header
        return json.dumps({"alg": "RS256", "kid": "x" * draw(st.integers(2000, 12000))})
    if choice == 3:  # duplicate keys: which one wins differs between parsers
        return '{{"alg":"RS256","typ":"logout+jwt","alg":"{}"}}'.format(
            draw(st.sampled_from(["none", "HS256"]))
        )
    if choice == 4:
        return draw(st.binary(max_size=60))  # not JSON at all
    return {"alg": draw(st.sampled_from(ALGS)), "crit": draw(json_values), "kid": draw(json_values)}


@st.composite
def jwt_payload(draw: Any, base: dict[str, Any] | None = None) -> Any:
    choice = draw(st.integers(0, 4))
    if choice == 0 and base:
        # Plausible claims with some replaced by wrong types.
        c = dict(base)
        for k in draw(st.lists(st.sampled_from(CLAIM_KEYS), max_size=4)):
            c[k] = draw(json_values)
        return c
    if choice == 1:
        return draw(st.dictionaries(st.sampled_from(CLAIM_KEYS) | any_text, json_values, max_size=8))
    if choice == 2:
        return draw(deep_json())
    if choice == 3 and base:
        body = json.dumps(base)[:-1]
        return body + ',"sid":1,"sid":{"x":[]},"iss":null}'  # duplicate claim keys
    return draw(json_values)


@st.composite
def garbage_jwt(draw: Any, base_claims: dict[str, Any] | None = None) -> str:
    """Structurally hostile compact JWS strings."""
    shape = draw(st.integers(0, 6))
    if shape == 0:
        return draw(any_text)
    if shape == 1:  # bad base64 / wrong segment count / padding
        parts = draw(st.lists(st.text("AZaz09-_=+/!.*~ ", max_size=40), min_size=0, max_size=6))
        return ".".join(parts)
    header = draw(jwt_header())
    payload = draw(jwt_payload(base_claims))
    sig = draw(st.one_of(st.just(""), st.binary(max_size=300).map(b64u), st.text("AZaz09-_=+/", max_size=50)))
    token = f"{_segment(header)}.{_segment(payload)}.{sig}"
    if shape == 3:
        token += "." + draw(st.text("AZaz09", max_size=10))  # JWE-ish extra segments
    if shape == 4:
        token = token.replace("-", "+").replace("_", "/")  # standard (not url-safe) base64
    return token


def forgeries(
    claims: dict[str, Any], public_pem: bytes, public_jwk_json: bytes, kid: str | None
) -> list[str]:
    """Well-formed tokens with valid-looking claims that must still be refused: alg none,
    and HS256 "signed" with the RSA public key's PEM / JWK bytes (algorithm confusion)."""
    out = []
    for alg, key in (
        ("none", None),
        ("HS256", public_pem),
        ("HS256", public_jwk_json),
        ("HS512", public_pem),
        ("none", b""),
    ):
        header: dict[str, Any] = {"alg": alg, "typ": "logout+jwt"}
        if kid:
            header["kid"] = kid
        signing_input = f"{_segment(header)}.{_segment(claims)}"
        if key is None:
            sig = ""
        else:
            digest = hashlib.sha512 if alg == "HS512" else hashlib.sha256
            sig = b64u(hmac.new(key, signing_input.encode(), digest).digest())
        out.append(f"{signing_input}.{sig}")
    return out


# --------------------------------------------------------------------------- RP receiver classes
# (issue 12 item 14: non-ASCII, quotes, control characters, deep nesting, NaN/Infinity and
# huge bodies, for values that sit *inside correctly signed* logout tokens)

#: Text built from the characters parsers and loggers trip over.
nasty_text = st.text(
    st.one_of(
        st.sampled_from(
            list("\"'\\`<>&%;=+#?/\x00\x01\x07\x08\t\n\r\x0b\x0c\x1b\x7f\u0085\u2028\u2029\ufeff")
        ),
        st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, blacklist_categories=("Cs",)),
        st.characters(max_codepoint=0x1F),
    ),
    min_size=1,
    max_size=80,
)


@st.composite
def non_numeric_date(draw: Any) -> str:
    """Raw JSON text for an ``exp``/``iat`` value that is not a usable NumericDate."""
    return draw(
        st.one_of(
            st.sampled_from(
                [
                    "NaN",
                    "Infinity",
                    "-Infinity",
                    "1e309",
                    "-1e309",
                    "1e99999",
                    "1" + "0" * 400,
                    "-" + "9" * 400,
                    "true",
                    "null",
                    '"1700000000"',
                    "[1700000000]",
                    '{"$date": 1}',
                    "1.7e9.5",
                ]
            ),
            st.integers(300, 3000).map(lambda d: "[" * d + "]" * d),
            nasty_text.map(json.dumps),
        )
    )


@st.composite
def deep_nesting(draw: Any, min_depth: int = 100, max_depth: int = 3000) -> str:
    """Raw JSON text of nested arrays/objects, small enough to fit in an 8 KiB token."""
    depth = draw(st.integers(min_depth, max_depth))
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"a":' * min(depth, 1000) + "0" + "}" * min(depth, 1000)


@st.composite
def body_size(draw: Any, limit: int) -> int:
    """Request body sizes around and far above ``limit`` (the bytes are made, not drawn)."""
    return draw(st.one_of(st.integers(limit - 2, limit + 2), st.integers(limit, 4 * 1024 * 1024)))
