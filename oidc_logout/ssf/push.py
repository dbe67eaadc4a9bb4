"""One push attempt (RFC 8935) of an outbox row with channel ``ssf_push``: find the SET the row
carries, sign it with the OP's key, POST it as ``application/secevent+jwt`` with the stream's
``authorization_header`` and classify the answer.

Called by the delivery dispatcher (the one hook in :mod:`oidc_logout.delivery.dispatcher`), so
an SSF push has the outbox's retries, dead letters, per-attempt records, per-client and
per-host bounds, the address policy of :mod:`oidc_logout._http` and the kept-alive
connections of :mod:`oidc_logout.poster` - exactly as back-channel logout. Never logs the SET
or the authorization header.

Classification (RFC 8935 §2.2-§2.4):

* 202 -> delivered (§2.2: "the SET Recipient SHALL acknowledge successful transmission by
  responding with HTTP Response Status Code 202 (Accepted)"); 200 and 204 are taken as
  delivered too (a receiver that processed the SET said so, if not in the RFC's words);
* 400 with ``err`` ``invalid_key`` -> retry after the key retry delay (the receiver's JWKS
  cache is behind a key rotation; the same SET verifies once it refetched); other ``err``
  codes (invalid_request, invalid_issuer, invalid_audience, authentication_failed,
  access_denied) -> failed: resending the same SET cannot succeed (§2.3);
* 401 / 403 -> failed (the stream's authorization_header is refused: an operator or the
  receiver must fix the stream; the row can be retried as a dead letter);
* 3xx -> failed (redirects are never followed), 429 / 5xx / network -> retry.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jwcrypto import jws
from jwcrypto.common import json_encode

from .._http import DisallowedAddress
from ..backchannel.request import FAILED, RETRY, AttemptResult, classify_response
from ..config import Settings
from ..keys import KeyRing, LoadedKey
from ..poster import Poster, PostFailed
from ..storage.base import utcnow
from ..storage.models import SSFEvent, SSFStream
from ..vocabulary import AttemptOutcome
from . import SET_TYP

__all__ = ["SET_ALG", "attempt_push", "classify_push_response", "sign_set"]

logger = logging.getLogger(__name__)

#: CAEP Interoperability Profile §2.6: "All events MUST be signed using the RS256 algorithm".
SET_ALG = "RS256"
#: RFC 8935 §2.4 error codes that a retransmission of the same SET cannot fix.
PERMANENT_ERRS = frozenset(
    {"invalid_request", "invalid_issuer", "invalid_audience", "authentication_failed", "access_denied"}
)


def sign_set(claims: Mapping[str, Any], key: LoadedKey) -> str:
    """``claims`` as a compact JWS with ``typ`` ``secevent+jwt`` (RFC 8417 §2.3, SSF §4.1.1)."""
    if "sub" in claims or "exp" in claims:
        # SSF §4.1.2 / §4.1.6: "sub" and "exp" MUST NOT be present in an SSF SET.
        raise ValueError("an SSF SET must carry neither 'sub' nor 'exp'")
    core = jws.JWSCore(key.alg, key.key, _header(key.alg, key.kid), json.dumps(claims, separators=(",", ":")))
    sig = core.sign()
    return f"{sig['protected']}.{sig['payload'].decode('ascii')}.{sig['signature']}"


@lru_cache(maxsize=64)
def _header(alg: str, kid: str) -> str:
    return str(json_encode({"alg": alg, "typ": SET_TYP, "kid": kid}))


def classify_push_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    truncated: bool,
    *,
    retry_after_cap: float,
    key_retry_delay: float | None,
) -> tuple[AttemptOutcome, str | None, float | None]:
    """(outcome, error, retry_after) of a receiver's answer to a pushed SET."""
    if status in (200, 202, 204):
        return AttemptOutcome.DELIVERED, None, None
    if status == 400:
        err = desc = None
        try:
            data = json.loads(body.decode("utf-8", "replace")) if body and not truncated else None
        except ValueError:
            data = None
        if isinstance(data, dict):
            err = data.get("err") if isinstance(data.get("err"), str) else None
            desc = data.get("description") if isinstance(data.get("description"), str) else None
        text = "HTTP 400" + (f" {err[:60]}" if err else "") + (f": {desc[:200]}" if desc else "")
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        if err == "invalid_key":
            # §2.4 invalid_key: "One or more keys used to encrypt or sign the SET is invalid or
            # otherwise unacceptable" - after a key rotation, until the receiver refetches.
            return RETRY, text, key_retry_delay
        return FAILED, text, None
    if status in (401, 403):
        return FAILED, f"HTTP {status}: the receiver refused the stream's authorization", None
    if status in (200, 204) or (400 <= status < 500 and status != 429):
        return FAILED, f"HTTP {status}", None
    # 3xx (never followed), 429 / 5xx (retry, honouring Retry-After): the back-channel rules.
    return classify_response(status, headers, body, truncated, retry_after_cap=retry_after_cap)


def attempt_push(
    session_factory: Any,
    http: Poster,
    keyring: KeyRing,
    settings: Settings,
    *,
    event_id: str | None,
    target_uri: str,
) -> AttemptResult:
    """One RFC 8935 attempt for the outbox row whose ``sid`` is ``event_id``."""
    started_at = utcnow()
    t0 = time.monotonic()
    with session_factory() as db:
        event = db.get(SSFEvent, event_id or "")
        stream = db.get(SSFStream, event.stream_id) if event is not None else None
        if event is None or stream is None:
            return AttemptResult(FAILED, None, "the SET's stream was deleted", None, 0, event_id, started_at)
        if stream.status == "disabled":
            # SSF §8.1.2 disabled: "MUST NOT transmit events over the stream".
            return AttemptResult(FAILED, None, "stream disabled", None, 0, event_id, started_at)
        if stream.status == "paused":
            # §8.1.2 paused: "MUST NOT transmit"; the row waits (and is sent once enabled).
            return AttemptResult(
                RETRY, None, "stream paused", settings.delivery_backoff_cap, 0, event_id, started_at
            )
        claims = dict(event.claims)
        auth = stream.authorization_header
        # The stream's endpoint now (a receiver may have moved it with PATCH since the row
        # was written); the poster's address policy applies to it all the same.
        target_uri = stream.endpoint_url or target_uri
    try:
        token = sign_set(claims, keyring.signing_key(SET_ALG))
    except KeyError:
        return AttemptResult(
            RETRY, None, f"no active signing key for alg {SET_ALG}", None, 0, event_id, started_at
        )
    # RFC 8935 §2.1: "the SET Transmitter ... Content-Type header ... application/secevent+jwt"
    # and "SHOULD indicate ... Accept header ... application/json".
    headers = {
        "Accept": "application/json",
        "Cache-Control": "no-store",
    }
    if auth:
        # SSF §6.1.1 authorization_header: "the Transmitter MUST provide this value with every
        # HTTP request to the endpoint_url".
        headers["Authorization"] = auth

    def done(
        outcome: AttemptOutcome, status: int | None, error: str | None, retry_after: float | None = None
    ) -> AttemptResult:
        ms = int((time.monotonic() - t0) * 1000)
        logger.info(
            "SSF push to %s: %s (status=%s, %d ms, jti=%s)%s",
            target_uri,
            outcome,
            status,
            ms,
            event_id,
            f": {error}" if error else "",
        )
        return AttemptResult(outcome, status, error, retry_after, ms, event_id, started_at)

    try:
        reply = http.post(
            target_uri,
            token.encode("ascii"),
            content_type="application/secevent+jwt",
            headers=headers,
            connect_timeout=settings.delivery_connect_timeout,
            read_timeout=settings.delivery_timeout,
            max_bytes=settings.max_response_bytes,
        )
    except DisallowedAddress as exc:
        return done(FAILED, None, f"address not allowed: {exc.description}")
    except PostFailed as exc:  # no answer (a PostTimeout too): the outbox retries
        return done(RETRY, None, exc.describe())
    outcome, error, retry_after = classify_push_response(
        reply.status,
        reply.headers,
        reply.body,
        reply.truncated,
        retry_after_cap=settings.delivery_retry_after_cap,
        key_retry_delay=settings.delivery_key_retry_delay,
    )
    return done(outcome, reply.status, error, retry_after)
