"""Logout token validation: OIDC Back-Channel Logout 1.0 §2.6 plus RFC 8725 (JWT BCP).

Step numbers in the comments refer to the list in Back-Channel Logout 1.0 §2.6 (final,
2022). Every rule raises :class:`LogoutTokenError` with its own ``reason``. All time checks
use the injected ``clock`` (jwcrypto's own claim checks are disabled because they read
``time.time()``). The token is never logged, only the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from jwcrypto import jws as jwcrypto_jws
from jwcrypto import jwt as jwcrypto_jwt
from jwcrypto.common import JWException

from .errors import LogoutTokenError, LogoutUnavailableError
from .jwks import KeyProvider
from .replay import MemoryReplayCache, ReplayCache

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "DEFAULT_ALGS",
    "SUPPORTED_ALGS",
    "LogoutToken",
    "LogoutTokenValidator",
]

log = logging.getLogger(__name__)

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TYP = "logout+jwt"

#: The default allowlist: RS256 only. Back-Channel Logout 1.0 §2.6 step 3 validates ``alg``
#: "in the same way it is validated for ID Tokens", and OIDC Core §3.1.3.7 step 7 says "The alg
#: value SHOULD be the default of RS256 or the algorithm sent by the Client in the
#: id_token_signed_response_alg parameter during Registration". Accepting every algorithm the
#: OP has a published key for would let a token signed with another key type pass.
DEFAULT_ALGS: tuple[str, ...] = ("RS256",)

#: Every algorithm ``allowed_algs`` may contain (asymmetric only, RFC 8725 §3.1).
SUPPORTED_ALGS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True)
class LogoutToken:
    """The validated claims of a logout token."""

    iss: str
    aud: tuple[str, ...]
    sub: str | None
    sid: str | None
    jti: str
    iat: float
    exp: float | None
    events: Mapping[str, Any]
    claims: Mapping[str, Any] = field(repr=False)


def _b64url_decode(part: str) -> bytes:
    # RFC 7515 §2: base64url without padding; reject anything else.
    if "=" in part or "+" in part or "/" in part:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7519 §4 / RFC 7515 §5.2: duplicate member names must be rejected or handled
    # consistently; rejecting avoids parser-differential attacks.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate member")
        out[k] = v
    return out


#: Largest magnitude accepted for a NumericDate: beyond 2**53 floats lose integer precision,
#: and ints this large cannot be added to a float without OverflowError.
_MAX_NUMERIC_DATE = 2.0**53


def _is_number(v: Any) -> TypeGuard[float]:
    # RFC 7519 §2 NumericDate: a JSON number. NaN/Infinity are not JSON numbers (RFC 8259 §6)
    # and compare False with everything, so "now >= NaN" would never expire a token.
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v) and abs(v) <= _MAX_NUMERIC_DATE
    except OverflowError:  # an int too large for a float
        return False


def _reject_constant(name: str) -> Any:
    # json.loads accepts the non-standard NaN, Infinity and -Infinity; RFC 8259 §6 does not.
    raise ValueError(f"non-standard JSON constant {name}")


def _json_object(raw: bytes | str) -> Any:
    """Strict JSON: no duplicate members, no NaN/Infinity; deep nesting is a ValueError."""
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RecursionError:  # deeply nested arrays/objects exhaust the C parser's stack
        raise ValueError("JSON nested too deeply") from None


def _nonempty_str(v: Any) -> TypeGuard[str]:
    return isinstance(v, str) and v != ""


class LogoutTokenValidator:
    """Validates back-channel logout tokens from one OP for one client.

    :param issuer: the OP's issuer identifier, compared exactly.
    :param client_id: this RP's client_id, which ``aud`` must contain.
    :param keys: where verification keys come from (normally a :class:`JWKSCache`).
    :param allowed_algs: JWS algorithms accepted. Default ``("RS256",)``: pass the client's
        registered ``id_token_signed_response_alg`` (Back-Channel Logout 1.0 §2.6 step 3 →
        OIDC Core §3.1.3.7 step 7, RS256 when unspecified). ``none`` and HMAC algorithms are
        refused at construction time because the key set is public (RFC 8725 §3.1).
    :param clock: callable returning epoch seconds, used for every time check.
    :param leeway: clock-skew tolerance in seconds for ``iat`` and ``exp``.
    :param max_age: how old (by ``iat``) a token may be. Back-Channel Logout 1.0 §4
        recommends short-lived tokens ("e.g. two minutes").
    :param require_exp: ``exp`` is REQUIRED in logout tokens (§2.4, final spec); set False
        to accept tokens from older OPs implementing the pre-2022 drafts without ``exp``.
    :param strict_typ: require header ``typ: logout+jwt`` (§2.4 RECOMMENDS explicit typing).
    :param max_token_bytes: tokens larger than this are refused before any parsing.
    :param replay_cache: where seen jti values are kept (§2.6 step 8). ``None`` (default)
        means a process-local :class:`MemoryReplayCache`; ``False`` disables the check.
    """

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        keys: KeyProvider,
        allowed_algs: Iterable[str] = DEFAULT_ALGS,
        clock: Callable[[], float] = time.time,
        leeway: float = 60.0,
        max_age: float = 300.0,
        require_exp: bool = True,
        strict_typ: bool = False,
        max_token_bytes: int = 8 * 1024,
        replay_cache: ReplayCache | bool | None = None,
    ) -> None:
        algs = (allowed_algs,) if isinstance(allowed_algs, str) else tuple(allowed_algs)
        for alg in algs:
            # Back-Channel Logout 1.0 §2.6 step 3: "an alg with the value none MUST NOT be
            # used"; RFC 8725 §3.1/§3.2: HMAC with a public key set allows forgery.
            if alg not in SUPPORTED_ALGS:
                raise ValueError(f"algorithm {alg!r} is not allowed for logout tokens")
        if not algs:
            raise ValueError("allowed_algs must not be empty")
        self.issuer = issuer
        self.client_id = client_id
        self.keys = keys
        self.allowed_algs = algs
        self.clock = clock
        self.leeway = float(leeway)
        self.max_age = float(max_age)
        self.require_exp = require_exp
        self.strict_typ = strict_typ
        self.max_token_bytes = max_token_bytes
        if replay_cache is None or replay_cache is True:
            self.replay_cache: ReplayCache | None = MemoryReplayCache(clock=clock)
        elif replay_cache is False:
            self.replay_cache = None
        else:
            self.replay_cache = replay_cache

    # -- public ---------------------------------------------------------------------

    def validate(self, token: str | bytes) -> LogoutToken:
        """Validate ``token`` and return its claims, or raise :class:`LogoutTokenError`.

        Nothing else escapes: a failure of the replay cache raises
        :class:`LogoutUnavailableError` (a :class:`LogoutTokenError` the HTTP layer answers
        with 503 so the OP retries), any other unexpected error ``LogoutTokenError("malformed")``.
        """
        try:
            return self._validate(token)
        except LogoutTokenError as exc:
            log.info("logout token rejected: %s", exc.reason)
            raise
        except Exception as exc:  # never let hostile input surface as a 500
            log.warning("logout token rejected: unexpected %s", type(exc).__name__)
            raise LogoutTokenError("malformed", "logout token could not be processed") from None

    # -- steps ----------------------------------------------------------------------

    def _validate(self, token: str | bytes) -> LogoutToken:
        # Size first, before any decoding or parsing (resource exhaustion).
        if len(token) > self.max_token_bytes:
            raise LogoutTokenError("too_large", "logout token exceeds the size limit")
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise LogoutTokenError("malformed", "logout token is not ASCII") from None
        if not isinstance(token, str):
            raise LogoutTokenError("malformed", "logout token must be a string")
        token = token.strip()
        parts = token.split(".")
        # §2.6 step 1 allows encrypted tokens; this library does not hold RP decryption
        # keys, so a JWE (5 parts) is refused explicitly rather than mis-parsed.
        if len(parts) == 5:
            raise LogoutTokenError("encrypted_not_supported", "encrypted logout tokens are not supported")
        # JWS Compact Serialization only (RFC 7515 §7.1); JSON serialization is refused.
        if len(parts) != 3 or not parts[0]:
            raise LogoutTokenError("malformed", "logout token is not a JWS compact serialization")

        header = self._parse_header(parts[0])
        alg = header.get("alg")
        # §2.6 step 3: "Validate the alg (algorithm) Header Parameter in the same way it is
        # validated for ID Tokens ... an alg with the value none MUST NOT be used".
        # RFC 8725 §3.1: an explicit allowlist, never chosen by the token.
        if not isinstance(alg, str) or alg not in self.allowed_algs:
            raise LogoutTokenError("alg_not_allowed", "signing algorithm is not allowed")
        self._check_typ(header)
        if "crit" in header:
            # RFC 7515 §4.1.11: unknown critical extensions must make the JWS invalid.
            raise LogoutTokenError("crit_unsupported", "critical header extensions are not supported")

        if not parts[1] or not parts[2]:
            raise LogoutTokenError("malformed", "logout token has an empty payload or signature")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise LogoutTokenError("malformed", "kid is not a string")
        # §2.6 step 2: "Validate the Logout Token signature in the same way that an ID Token
        # signature is validated" (OIDC Core 3.1.3.7 step 6: with the OP's keys from jwks_uri).
        candidates = self.keys.keys_for(kid, alg)
        claims = self._verify(token, candidates, alg)
        result = self._check_claims(claims)
        self._check_replay(result)
        return result

    def _parse_header(self, part: str) -> dict[str, Any]:
        try:
            header = _json_object(_b64url_decode(part))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise LogoutTokenError("malformed", "token header is not valid base64url JSON") from None
        if not isinstance(header, dict):
            raise LogoutTokenError("malformed", "token header is not a JSON object")
        if "enc" in header:
            raise LogoutTokenError("encrypted_not_supported", "encrypted logout tokens are not supported")
        return header

    def _check_typ(self, header: Mapping[str, Any]) -> None:
        # §2.4: "Use of explicit typing with the typ header value logout+jwt is RECOMMENDED"
        # (and §4.1 Cross-JWT Confusion). It is only RECOMMENDED, so by default a missing typ
        # and the generic "JWT" (what older OPs send) are accepted. Any *other* explicit type
        # (e.g. "at+jwt", "secevent+jwt") declares a different kind of JWT: accepting it would
        # defeat the purpose of explicit typing (RFC 8725 §3.11), so it is rejected in both
        # modes. strict_typ=True requires exactly logout+jwt (RFC 7515 §4.1.9: case-insensitive,
        # "application/" prefix may be omitted).
        typ = header.get("typ")
        if typ is None:
            if self.strict_typ:
                raise LogoutTokenError("typ_invalid", "typ logout+jwt is required")
            return
        if not isinstance(typ, str):
            raise LogoutTokenError("typ_invalid", "typ is not a string")
        norm = typ.lower()
        if norm.startswith("application/"):
            norm = norm[len("application/") :]
        if norm == LOGOUT_TYP:
            return
        if norm == "jwt" and not self.strict_typ:
            return
        raise LogoutTokenError("typ_invalid", "typ is not logout+jwt")

    def _verify(self, token: str, candidates: list[Any], alg: str) -> dict[str, Any]:
        payload: str | None = None
        for key in candidates:
            try:
                t = jwcrypto_jwt.JWT(
                    jwt=token,
                    key=key,
                    algs=[alg],  # RFC 8725 §3.1: explicit algs, never taken from the token
                    check_claims=False,  # time/claim checks are done below with self.clock
                    expected_type="JWS",
                    strict_serialization=True,
                )
                payload = t.claims
                break
            except jwcrypto_jws.InvalidJWSSignature:
                continue
            except (JWException, ValueError, TypeError, RecursionError):
                raise LogoutTokenError("malformed", "logout token could not be parsed") from None
        if payload is None:
            raise LogoutTokenError("bad_signature", "signature verification failed")
        try:
            claims = _json_object(payload)
        except ValueError:
            raise LogoutTokenError("malformed", "token payload is not valid JSON") from None
        if not isinstance(claims, dict):
            raise LogoutTokenError("malformed", "token payload is not a JSON object")
        return claims

    def _check_claims(self, c: dict[str, Any]) -> LogoutToken:
        now = self.clock()
        # §2.6 step 4: "Validate the iss, aud, iat, and exp Claims in the same way they are
        # validated in ID Tokens." OIDC Core 3.1.3.7 step 2: iss MUST exactly match.
        if c.get("iss") != self.issuer:
            raise LogoutTokenError("iss_mismatch", "iss does not match the expected issuer")
        # OIDC Core 3.1.3.7 step 3: aud MUST contain the client_id (string or array).
        aud = c.get("aud")
        if isinstance(aud, str):
            auds: tuple[str, ...] = (aud,)
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            auds = tuple(aud)
        else:
            auds = ()
        if self.client_id not in auds:
            raise LogoutTokenError("aud_mismatch", "aud does not contain this client_id")
        # §2.4: iat REQUIRED; OIDC Core 3.1.3.7 step 10: the RP may reject tokens issued too
        # far from the current time.
        iat = c.get("iat")
        if not _is_number(iat):
            raise LogoutTokenError("iat_missing", "iat is missing or not a number")
        if iat > now + self.leeway:
            raise LogoutTokenError("iat_in_future", "iat is in the future")
        if iat < now - self.max_age - self.leeway:
            raise LogoutTokenError("iat_too_old", "iat is too old")
        # §2.4 (final spec): exp REQUIRED; OIDC Core 3.1.3.7 step 9: current time MUST be
        # before exp (plus a small leeway for clock skew).
        exp = c.get("exp")
        if exp is None:
            if self.require_exp:
                raise LogoutTokenError("exp_missing", "exp is missing")
        elif not _is_number(exp):
            raise LogoutTokenError("exp_missing", "exp is not a number")
        elif now >= exp + self.leeway:
            raise LogoutTokenError("expired", "logout token has expired")
        # §2.4: jti REQUIRED (it is what makes replay detection in step 8 possible).
        jti = c.get("jti")
        if not _nonempty_str(jti):
            raise LogoutTokenError("jti_missing", "jti is missing")
        # §2.6 step 6: "Verify that the Logout Token contains an events Claim whose value is
        # JSON object containing the member name
        # http://schemas.openid.net/event/backchannel-logout" (§2.4: the member value MUST
        # be a JSON object).
        if "events" not in c:
            raise LogoutTokenError("events_missing", "events claim is missing")
        events = c["events"]
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
            raise LogoutTokenError("events_invalid", "events claim lacks the back-channel logout event")
        # §2.6 step 5: "Verify that the Logout Token contains a sub Claim, a sid Claim, or both."
        sub, sid = c.get("sub"), c.get("sid")
        if (sub is not None and not _nonempty_str(sub)) or (sid is not None and not _nonempty_str(sid)):
            raise LogoutTokenError("sid_sub_missing", "sub/sid must be non-empty strings")
        if sub is None and sid is None:
            raise LogoutTokenError("sid_sub_missing", "neither sub nor sid is present")
        # §2.6 step 7: "Verify that the Logout Token does not contain a nonce Claim."
        # (§2.4: prohibited so a logout token can never pass as an ID token.)
        if "nonce" in c:
            raise LogoutTokenError("nonce_present", "nonce claim is present")
        return LogoutToken(
            iss=c["iss"],
            aud=auds,
            sub=sub,
            sid=sid,
            jti=jti,
            iat=float(iat),
            exp=float(exp) if exp is not None else None,
            events=events,
            claims=c,
        )

    def _check_replay(self, t: LogoutToken) -> None:
        # §2.6 step 8: "Optionally verify that another Logout Token with the same jti value
        # has not been recently received." Done last, so invalid tokens never burn a jti.
        if self.replay_cache is None:
            return
        # Keep the jti as long as a copy of the token could still pass the checks above.
        until = t.iat + self.max_age + self.leeway
        if t.exp is not None:
            until = min(until, t.exp + self.leeway)
        until = max(until, self.clock() + 1.0)
        try:
            first = self.replay_cache.add_if_absent(t.iss, t.jti, until)
        except Exception as exc:  # storage down or full: not the OP's fault, let it retry
            log.error("replay cache failed: %s", type(exc).__name__)
            raise LogoutUnavailableError(
                "replay_cache_unavailable", "the replay check could not be performed"
            ) from None
        if not first:
            raise LogoutTokenError("replayed", "logout token was already received")
