"""One back-channel logout delivery attempt: mint a fresh logout token, POST it to the RP's
``backchannel_logout_uri`` (Back-Channel Logout 1.0 §2.5) and classify the reply (§2.8).

Classification:

* 200 / 204 -> ``delivered``;
* network error, timeout, 5xx, 429 -> ``retry`` (429 and 503 honour ``Retry-After``, capped);
* 3xx -> ``failed`` ("redirect not followed": following it would reopen the SSRF hole);
* 400/401 for a key reason (the RP does not know the ``kid`` yet or could not fetch the
  JWKS) -> ``retry`` after at least ``delivery_key_retry_delay``: the token was fine, the
  RP's key cache was not, and it refetches the JWKS after its cooldown;
* other 4xx -> ``failed``, with the RP's ``error``/``error_description`` recorded (truncated);
* an address refused by the policy -> ``failed`` (no connection was made).

The token value is never logged: only status, reason and the ``jti``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._http import DisallowedAddress
from ..config import Settings
from ..keys import KeyRing
from ..poster import Poster, PostFailed
from ..storage.base import utcnow
from ..vocabulary import AttemptOutcome
from .logout_token import logout_token_claims, new_jti, sign_logout_token

__all__ = [
    "DELIVERED",
    "FAILED",
    "RETRY",
    "AttemptResult",
    "attempt_delivery",
    "classify_response",
    "parse_retry_after",
    "post_logout_token",
]

logger = logging.getLogger(__name__)

# §2.8's three answers, in the one vocabulary the outbox records (short names for the
# classification below).
DELIVERED = AttemptOutcome.DELIVERED
RETRY = AttemptOutcome.RETRY
FAILED = AttemptOutcome.FAILED

#: An RP's 400/401 text that says its verification key was missing, not that the token was
#: bad: ``oidc_logout.rp`` answers ``unknown_kid`` / ``jwks_unavailable``; other RP libraries
#: say "kid", "JWKS", "signing key" or "no matching key".
KEY_REASON = re.compile(
    r"unknown[_ -]?kid|jwks|\bkid\b|signing key|no matching key|"
    r"key not found",
    re.IGNORECASE,
)

#: Longest RP-provided error text kept (the columns hold 2048; an RP's prose is not ours).
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt produced (persisted as a DeliveryAttempt row)."""

    outcome: AttemptOutcome
    http_status: int | None
    error: str | None
    retry_after: float | None  # seconds the RP asked us to wait (already capped)
    duration_ms: int
    jti: str | None
    started_at: dt.datetime = field(default_factory=utcnow)


def _clean(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Printable, single-line and truncated: RP text goes into logs and an admin UI."""
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, *, cap: float, now: dt.datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or HTTP-date),
    clamped to ``[0, cap]``; None if absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    seconds: float
    if value.isdigit():
        seconds = float(int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or utcnow())).total_seconds()
    return max(0.0, min(float(cap), seconds))


def _rp_error(body: bytes, truncated: bool, status: int) -> str:
    """The RP's JSON ``error``/``error_description`` (§2.8), else a short body excerpt."""
    detail = ""
    try:
        data = json.loads(body.decode("utf-8", "replace")) if body and not truncated else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        detail = data["error"]
        desc = data.get("error_description")
        if isinstance(desc, str) and desc:
            detail += ": " + desc
    elif body:
        detail = body[:120].decode("utf-8", "replace")
    msg = f"HTTP {status}"
    if detail:
        msg += " " + _clean(detail)
    if truncated:
        msg += " (response body exceeded the size limit)"
    return _clean(msg, MAX_ERROR_CHARS + 60)


def classify_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    truncated: bool,
    *,
    retry_after_cap: float,
    key_retry_delay: float | None = None,
) -> tuple[AttemptOutcome, str | None, float | None]:
    """(outcome, error, retry_after) for an RP's HTTP answer. ``key_retry_delay``: the
    least delay before retrying a key-reason refusal (None: the usual backoff)."""
    # §2.8: "If the logout succeeded, the RP MUST respond with HTTP 200 OK. However, [...]
    # OPs should be prepared to also process an HTTP 204 No Content response as successful"
    if status in (200, 204):
        return DELIVERED, None, None
    if 300 <= status < 400:
        # Redirects are never followed (the target could be any internal address).
        return FAILED, f"HTTP {status} redirect not followed", None
    if status == 429 or status >= 500:
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(headers.get("Retry-After"), cap=retry_after_cap)
        return RETRY, _rp_error(body, truncated, status), retry_after
    if 400 <= status < 500:
        error = _rp_error(body, truncated, status)
        if status in (400, 401) and KEY_REASON.search(error):
            # §2.6 step 3: the RP validates the signature "using the key ... from the jwks_uri";
            # right after a key rotation (or while its first JWKS fetch fails) it cannot, and
            # RPs rate-limit refetches on an unknown kid. The same token verifies once the RP
            # refetched: retry after its cooldown instead of giving up (a key rollover in flight).
            return RETRY, error, key_retry_delay
        # §2.8: "If the request failed to validate [...] the RP MUST respond with HTTP 400
        # Bad Request" (optionally with JSON error/error_description): resending the same
        # kind of token will not help, so this is a permanent failure.
        return FAILED, error, None
    # 1xx or other oddities: treat as a transient server-side problem.
    return RETRY, f"HTTP {status} unexpected status", None


def post_logout_token(
    http: Poster,
    uri: str,
    token: str,
    *,
    jti: str | None,
    connect_timeout: float,
    read_timeout: float,
    max_bytes: int,
    retry_after_cap: float,
    key_retry_delay: float | None = None,
) -> AttemptResult:
    """POST ``logout_token`` to ``uri`` once and classify the reply."""
    started_at = utcnow()
    t0 = time.monotonic()

    def done(
        outcome: AttemptOutcome, status: int | None, error: str | None, retry_after: float | None = None
    ) -> AttemptResult:
        ms = int((time.monotonic() - t0) * 1000)
        logger.debug(  # the dispatcher logs each attempt with the state it was recorded in
            "back-channel logout to %s: %s (status=%s, %d ms, jti=%s)%s",
            uri,
            outcome,
            status,
            ms,
            jti,
            f": {error}" if error else "",
        )
        return AttemptResult(outcome, status, error, retry_after, ms, jti, started_at)

    try:
        # §2.5: "The OP uses an HTTP POST to the registered Back-Channel Logout URI [...]
        # using the application/x-www-form-urlencoded format" with the logout_token parameter.
        # (the poster never follows a redirect and reads at most max_bytes of the answer)
        reply = http.post_form(
            uri,
            {"logout_token": token},
            headers={"Accept": "application/json", "Cache-Control": "no-store"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_bytes=max_bytes,
        )
    except DisallowedAddress as exc:
        return done(FAILED, None, f"address not allowed: {exc.description}")
    except PostFailed as exc:  # no answer (a PostTimeout too): the outbox retries
        return done(RETRY, None, _clean(exc.describe()))
    outcome, error, retry_after = classify_response(
        reply.status,
        reply.headers,
        reply.body,
        reply.truncated,
        retry_after_cap=retry_after_cap,
        key_retry_delay=key_retry_delay,
    )
    return done(outcome, reply.status, error, retry_after)


def attempt_delivery(
    http: Poster,
    keyring: KeyRing,
    settings: Settings,
    *,
    client_id: str,
    target_uri: str,
    sid: str | None,
    sub: str | None,
    alg: str = "RS256",
    now: int | None = None,
) -> AttemptResult:
    """Mint a fresh logout token (fresh ``jti``) and make one delivery attempt."""
    jti = new_jti()
    try:
        key = keyring.signing_key(alg or "RS256")
        claims = logout_token_claims(
            issuer=settings.issuer,
            client_id=client_id,
            sub=sub,
            sid=sid,
            now=int(time.time()) if now is None else now,
            lifetime=settings.logout_token_lifetime,
            jti=jti,
        )
        token = sign_logout_token(claims, key)
    except KeyError:
        # An operator can add a key for this alg; retry rather than give up.
        return AttemptResult(RETRY, None, f"no active signing key for alg {alg}", None, 0, None)
    except ValueError as exc:
        return AttemptResult(FAILED, None, _clean(f"cannot build logout token: {exc}"), None, 0, None)
    return post_logout_token(
        http,
        target_uri,
        token,
        jti=jti,
        connect_timeout=settings.delivery_connect_timeout,
        read_timeout=settings.delivery_timeout,
        max_bytes=settings.max_response_bytes,
        retry_after_cap=settings.delivery_retry_after_cap,
        key_retry_delay=settings.delivery_key_retry_delay,
    )
