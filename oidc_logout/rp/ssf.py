"""Security Event Token validation for a Shared Signals receiver.

RFC 8417 (SET) §2-§4, profiled by OpenID Shared Signals Framework 1.0 §3-§4 and the CAEP
Interoperability Profile 1.0 §2; event payloads per CAEP 1.0 §3, RISC 1.0 §2.3 and SSF 1.0
§8.1.4-§8.1.5. Every rule raises :class:`~oidc_logout.rp.ssf_errors.SETError` with its RFC 8935
§2.4 error code and its own ``reason``. All time checks use the injected ``clock``. The SET is
never logged, only the reason.

The receiver that acts on validated events (ending sessions, verification, callbacks) is
:mod:`oidc_logout.rp.ssf_receiver`; poll delivery is :mod:`oidc_logout.rp.ssf_poll`.
"""

from __future__ import annotations

import binascii
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jwcrypto import jws as jwcrypto_jws
from jwcrypto import jwt as jwcrypto_jwt
from jwcrypto.common import JWException

from .errors import LogoutTokenError
from .jwks import KeyProvider
from .replay import MemoryReplayCache, ReplayCache
from .ssf_errors import SETError, SETReplayed, SETUnavailableError
from .ssf_subject import SubjectId, parse_subject
from .validation import SUPPORTED_ALGS, _b64url_decode, _is_number, _json_object, _nonempty_str

__all__ = [
    "ACCOUNT_DISABLED",
    "CAEP_INITIATING_ENTITIES",
    "CREDENTIAL_CHANGE",
    "CREDENTIAL_CHANGE_TYPES",
    "SESSION_REVOKED",
    "SET_TYP",
    "STREAM_STATUSES",
    "STREAM_UPDATED",
    "VERIFICATION",
    "SETValidator",
    "SecurityEvent",
]

log = logging.getLogger(__name__)

#: CAEP 1.0 §3.1.
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
#: CAEP 1.0 §3.3.
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
#: RISC 1.0 §2.3.
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
#: SSF 1.0 §8.1.4.1.
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
#: SSF 1.0 §8.1.5.
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"

#: SSF 1.0 §4.1.1 / RFC 8417 §2.3: the explicit type of a SET.
SET_TYP = "secevent+jwt"
#: CAEP 1.0 §2 ``initiating_entity`` values.
CAEP_INITIATING_ENTITIES = frozenset({"admin", "user", "policy", "system"})
#: CAEP 1.0 §3.3.1 ``change_type`` values.
CREDENTIAL_CHANGE_TYPES = frozenset({"create", "revoke", "update", "delete"})
#: SSF 1.0 §8.1.2 stream statuses (sent in stream-updated, §8.1.5).
STREAM_STATUSES = frozenset({"enabled", "paused", "disabled"})

#: Events whose subject is the stream itself (SSF 1.0 §8.1.4.1, §8.1.5: ``opaque`` stream id).
_STREAM_EVENTS = frozenset({VERIFICATION, STREAM_UPDATED})
#: Prefix of the replay-store key, so a SET and a logout token sharing the store can never
#: collide on a jti.
_JTI_NAMESPACE = "secevent:"


@dataclass(frozen=True)
class SecurityEvent:
    """A validated SET carrying exactly one event (CAEP Interoperability Profile §2.8.1)."""

    iss: str
    aud: tuple[str, ...]
    jti: str
    iat: float
    #: SSF 1.0 §4.1.9: correlates SETs of one underlying cause; may be absent.
    txn: str | None
    #: The parsed top-level ``sub_id`` (SSF 1.0 §3.1).
    subject: SubjectId
    #: The event type URI (the one key of ``events``).
    event_type: str
    #: The event object (the value under ``event_type``).
    event: Mapping[str, Any]
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def initiating_entity(self) -> str | None:
        value = self.event.get("initiating_entity")
        return value if isinstance(value, str) else None

    @property
    def reason_admin(self) -> Mapping[str, str]:
        value = self.event.get("reason_admin")
        return value if isinstance(value, dict) else {}


def _normalise_typ(typ: str) -> str:
    # RFC 7515 §4.1.9: media type names compare case-insensitively, "application/" may be omitted.
    norm = typ.lower()
    return norm[len("application/") :] if norm.startswith("application/") else norm


def _localised_text(value: Any) -> bool:
    # CAEP 1.0 §2 reason_admin / reason_user: "The object MUST contain one or more key/value
    # pairs, with a BCP47 language tag as the key and the locale-specific ... message as the value."
    return isinstance(value, dict) and bool(value) and all(isinstance(v, str) for v in value.values())


class SETValidator:
    """Validates SETs from one SSF transmitter for one receiver (stream audience).

    :param issuer: the transmitter's issuer, compared exactly with ``iss`` (SSF 1.0 §4.1.6;
        it must also be the issuer the Transmitter Configuration Metadata was fetched for).
    :param audience: this receiver's audience (the stream's ``aud``), which ``aud`` must contain
        (RFC 8417 §2.2, RFC 7519 §4.1.3). Several values may be given; one must match.
    :param keys: verification keys: a :class:`~oidc_logout.rp.jwks.JWKSCache` on the
        transmitter's ``jwks_uri`` (SSF 1.0 §4.1.4) refetches once on an unknown ``kid``.
    :param allowed_algs: default ``("RS256",)``: CAEP Interoperability Profile §2.6 "All events
        MUST be signed using the RS256 algorithm". ``none`` and HMAC are refused at construction
        (RFC 8725 §3.1).
    :param min_rsa_bits: the profile's "minimum of 2048-bit keys"; a smaller key is ``invalid_key``.
    :param clock: epoch seconds for every time check.
    :param leeway: clock-skew tolerance for ``iat`` in the future.
    :param max_age: oldest ``iat`` accepted, and how long a jti is remembered. SETs are queued
        while a stream is paused or a receiver is down (and poll receivers collect late), so
        the default is generous (7 days); a replay older than this is refused as too old.
    :param allow_exp: SSF 1.0 §4.1.7: "The exp claim MUST NOT be used in SETs"; by default a SET
        with ``exp`` is refused (defence against confusion with other JWTs, RFC 8417 §4.5).
    :param replay_cache: where seen jti values are kept: pass the RP's back-channel logout
        replay store to share it (jtis are namespaced). ``None``: a process-local store.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Iterable[str],
        keys: KeyProvider,
        allowed_algs: Iterable[str] = ("RS256",),
        min_rsa_bits: int = 2048,
        clock: Callable[[], float] = time.time,
        leeway: float = 60.0,
        max_age: float = 7 * 86400.0,
        allow_exp: bool = False,
        max_token_bytes: int = 16 * 1024,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        algs = (allowed_algs,) if isinstance(allowed_algs, str) else tuple(allowed_algs)
        if not algs:
            raise ValueError("allowed_algs must not be empty")
        for alg in algs:
            # RFC 8725 §3.1/§3.2: no "none", no HMAC with a public key set.
            if alg not in SUPPORTED_ALGS:
                raise ValueError(f"algorithm {alg!r} is not allowed for SETs")
        auds = (audience,) if isinstance(audience, str) else tuple(audience)
        if not auds or not all(isinstance(a, str) and a for a in auds):
            raise ValueError("audience must be one or more non-empty strings")
        self.issuer = issuer
        self.audience = auds
        self.keys = keys
        self.allowed_algs = algs
        self.min_rsa_bits = min_rsa_bits
        self.clock = clock
        self.leeway = float(leeway)
        self.max_age = float(max_age)
        self.allow_exp = allow_exp
        self.max_token_bytes = max_token_bytes
        # "is None", not "or": an empty MemoryReplayCache is falsy (it has __len__).
        self.replay_cache: ReplayCache = (
            replay_cache if replay_cache is not None else MemoryReplayCache(clock=clock)
        )

    # -- public -----------------------------------------------------------------------

    def validate(self, token: str | bytes) -> SecurityEvent:
        """Validate ``token`` and claim its jti; return the event or raise :class:`SETError`.

        A jti seen before raises :class:`SETReplayed`. A failure of the receiver's own
        dependencies (JWKS unreachable, replay store down) raises :class:`SETUnavailableError`.
        Anything unexpected becomes ``SETError("invalid_request", "malformed")``: hostile
        input never surfaces as a 500. Call :meth:`release` if processing the event fails,
        so that the transmitter's retry is processed rather than taken for a duplicate.
        """
        try:
            event = self.check(token)
            self._claim(event)
            return event
        except SETReplayed:
            log.info("SET duplicate: already received")
            raise
        except SETError as exc:
            log.info("SET rejected: %s/%s", exc.err, exc.reason)
            raise
        except Exception as exc:
            log.warning("SET rejected: unexpected %s", type(exc).__name__)
            raise SETError("invalid_request", "malformed", "SET could not be processed") from None

    def check(self, token: str | bytes) -> SecurityEvent:
        """Every check of :meth:`validate` except the replay check (nothing is recorded)."""
        if len(token) > self.max_token_bytes:
            raise SETError("invalid_request", "too_large", "SET exceeds the size limit")
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise SETError("invalid_request", "malformed", "SET is not ASCII") from None
        parts = token.strip().split(".")
        # RFC 8417 §2: a SET is a JWT, optionally encrypted. This receiver holds no decryption
        # key (SSF 1.0 requires none): a JWE (five parts) is refused explicitly.
        if len(parts) == 5:
            raise SETError("invalid_request", "encrypted_not_supported", "encrypted SETs are not supported")
        # RFC 7519 §7.2 / RFC 7515 §7.1: the compact serialization only.
        if len(parts) != 3 or not parts[0]:
            raise SETError("invalid_request", "malformed", "SET is not a JWS compact serialization")
        header = self._header(parts[0])
        alg = header.get("alg")
        # RFC 8417 §5 / RFC 8725 §3.1: an explicit allowlist chosen by the receiver, never by
        # the token; "none" is never in it (an unsigned SET cannot be attributed to anyone).
        if not isinstance(alg, str) or alg not in self.allowed_algs:
            raise SETError("invalid_request", "alg_not_allowed", "signing algorithm is not allowed")
        # SSF 1.0 §4.1.1: "SSF events MUST use explicit typing as defined in Section 2.3 of
        # RFC 8417" (typ secevent+jwt).
        typ = header.get("typ")
        if not isinstance(typ, str) or _normalise_typ(typ) != SET_TYP:
            raise SETError("invalid_request", "typ_invalid", "typ must be secevent+jwt")
        # RFC 7515 §4.1.11: unknown critical extensions make the JWS invalid.
        if "crit" in header:
            raise SETError(
                "invalid_request", "crit_unsupported", "critical header extensions are not supported"
            )
        if not parts[1] or not parts[2]:
            raise SETError("invalid_request", "malformed", "SET has an empty payload or signature")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise SETError("invalid_request", "malformed", "kid is not a string")
        claims = self._verify(token.strip(), self._keys(kid, alg), alg)
        return self._claims(claims)

    def release(self, event: SecurityEvent) -> None:
        """Forget ``event``'s jti after its processing failed (when the store can forget)."""
        discard = getattr(self.replay_cache, "discard", None)
        if callable(discard):
            try:
                discard(event.iss, _JTI_NAMESPACE + event.jti)
            except Exception as exc:
                log.error("replay store could not release a jti: %s", type(exc).__name__)

    # -- steps --------------------------------------------------------------------------

    @staticmethod
    def _header(part: str) -> dict[str, Any]:
        try:
            header = _json_object(_b64url_decode(part))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise SETError("invalid_request", "malformed", "SET header is not valid base64url JSON") from None
        if not isinstance(header, dict):
            raise SETError("invalid_request", "malformed", "SET header is not a JSON object")
        if "enc" in header:
            raise SETError("invalid_request", "encrypted_not_supported", "encrypted SETs are not supported")
        return header

    def _keys(self, kid: str | None, alg: str) -> list[Any]:
        # SSF 1.0 §4.1.4: keys from the transmitter's jwks_uri; the JWKS cache refetches once on
        # an unknown kid (key rotation) before giving up.
        try:
            keys = self.keys.keys_for(kid, alg)
        except LogoutTokenError as exc:
            if exc.reason == "jwks_unavailable":
                raise SETUnavailableError(
                    "jwks_unavailable", "the transmitter's keys could not be fetched"
                ) from None
            # RFC 8935 §2.4 invalid_key: "One or more keys used to ... sign the SET is invalid
            # or otherwise unacceptable to the SET Recipient".
            raise SETError(
                "invalid_key", "unknown_kid", "no matching key in the transmitter's JWKS"
            ) from None
        if alg.startswith(("RS", "PS")):
            # CAEP Interoperability Profile §2.6: RS256 "using a minimum of 2048-bit keys".
            keys = [k for k in keys if k.get_op_key("verify").key_size >= self.min_rsa_bits]
            if not keys:
                raise SETError("invalid_key", "key_too_small", "the signing key is shorter than allowed")
        return keys

    @staticmethod
    def _verify(token: str, candidates: list[Any], alg: str) -> dict[str, Any]:
        payload: str | None = None
        for key in candidates:
            try:
                t = jwcrypto_jwt.JWT(
                    jwt=token,
                    key=key,
                    algs=[alg],
                    check_claims=False,  # claim and time checks below, with the injected clock
                    expected_type="JWS",
                    strict_serialization=True,
                )
                payload = t.claims
                break
            except jwcrypto_jws.InvalidJWSSignature:
                continue
            except (JWException, ValueError, TypeError, RecursionError):
                raise SETError("invalid_request", "malformed", "SET could not be parsed") from None
        if payload is None:
            # RFC 8935 §2.4 authentication_failed: "The SET Recipient could not authenticate the
            # SET Transmitter" — the signature is what authenticates it (RFC 8417 §5).
            raise SETError("authentication_failed", "bad_signature", "signature verification failed")
        try:
            claims = _json_object(payload)
        except ValueError:
            raise SETError("invalid_request", "malformed", "SET payload is not valid JSON") from None
        if not isinstance(claims, dict):
            raise SETError("invalid_request", "malformed", "SET payload is not a JSON object")
        return claims

    def _claims(self, c: dict[str, Any]) -> SecurityEvent:
        now = self.clock()
        # RFC 8417 §2.2 "iss" REQUIRED; SSF 1.0 §4.1.6: "Receivers MUST validate that this claim
        # matches the iss in the Stream Configuration data, as well as the Issuer from which the
        # Receiver requested the Transmitter Configuration data."
        if c.get("iss") != self.issuer:
            raise SETError("invalid_issuer", "iss_mismatch", "iss is not the configured transmitter")
        # RFC 8417 §2.2 "aud"; RFC 7519 §4.1.3: the recipient MUST identify itself with a value
        # in aud, else the JWT MUST be rejected (SSF 1.0 §4.1.8: a string or an array).
        aud = c.get("aud")
        if isinstance(aud, str):
            auds: tuple[str, ...] = (aud,)
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            auds = tuple(aud)
        else:
            auds = ()
        if not any(a in auds for a in self.audience):
            raise SETError("invalid_audience", "aud_mismatch", "aud does not name this receiver")
        # RFC 8417 §2.2: "iat" REQUIRED; one issued in the future (beyond skew) is refused, one
        # older than max_age too (the replay store only remembers that long).
        iat = c.get("iat")
        if not _is_number(iat):
            raise SETError("invalid_request", "iat_missing", "iat is missing or not a number")
        if iat > now + self.leeway:
            raise SETError("invalid_request", "iat_in_future", "iat is in the future")
        if iat < now - self.max_age - self.leeway:
            raise SETError("invalid_request", "iat_too_old", "iat is older than the receiver accepts")
        # RFC 8417 §2.2: "jti" REQUIRED (what duplicate detection relies on).
        jti = c.get("jti")
        if not _nonempty_str(jti):
            raise SETError("invalid_request", "jti_missing", "jti is missing")
        # SSF 1.0 §4.1.7: "The exp claim MUST NOT be used in SETs."
        if "exp" in c:
            exp = c["exp"]
            if not self.allow_exp:
                raise SETError("invalid_request", "exp_present", "SSF SETs must not carry exp")
            if not _is_number(exp) or now >= exp + self.leeway:
                raise SETError("invalid_request", "expired", "SET has expired")
        # SSF 1.0 §4.1.2: "The JWT sub claim MUST NOT be present in any SET containing an SSF
        # event" (RFC 8417 §4.4 / §4.6: keeps a SET from passing as an ID or access token).
        if "sub" in c:
            raise SETError("invalid_request", "sub_present", "SSF SETs must not carry sub")
        txn = c.get("txn")
        if txn is not None and not isinstance(txn, str):
            raise SETError("invalid_request", "txn_invalid", "txn is not a string")
        event_type, event = self._events(c)
        # SSF 1.0 §3.1: "A top-level claim named sub_id MUST be used to describe the primary
        # subject of the event."
        if "sub_id" not in c:
            raise SETError("invalid_request", "sub_id_missing", "sub_id is missing")
        subject = parse_subject(c["sub_id"])
        self._event_payload(event_type, event, subject)
        return SecurityEvent(
            iss=c["iss"],
            aud=auds,
            jti=jti,
            iat=float(iat),
            txn=txn,
            subject=subject,
            event_type=event_type,
            event=event,
            claims=c,
        )

    @staticmethod
    def _events(c: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        # RFC 8417 §2.2: "events" REQUIRED, a JSON object whose member names are event type URIs
        # and whose values "MUST be a JSON object".
        events = c.get("events")
        if not isinstance(events, dict) or not events:
            raise SETError("invalid_request", "events_missing", "events claim is missing or empty")
        # CAEP Interoperability Profile §2.8.1: "The events claim of the SET MUST contain only
        # one event" (SSF 1.0 §4.2.1 says SHOULD; the profile narrows it).
        if len(events) != 1:
            raise SETError("invalid_request", "events_not_one", "events must contain exactly one event")
        ((event_type, event),) = events.items()
        if not isinstance(event, dict):
            raise SETError("invalid_request", "event_not_object", "the event value must be a JSON object")
        return event_type, event

    @staticmethod
    def _event_payload(event_type: str, e: Mapping[str, Any], subject: SubjectId) -> None:
        """RFC 8935 §2.4 invalid_request also covers "the Event Payload within the SET does not
        conform to the event's definition": the definitions below are checked; unknown members
        are ignored (SSF 1.0 §4.2.3: "Receivers MUST ignore any fields they do not understand")."""

        def bad(reason: str, description: str) -> SETError:
            return SETError("invalid_request", reason, description)

        # CAEP 1.0 §2 optional event claims, wherever they appear.
        if "event_timestamp" in e and not _is_number(e["event_timestamp"]):
            raise bad("event_timestamp_invalid", "event_timestamp must be a number")
        if "initiating_entity" in e and e["initiating_entity"] not in CAEP_INITIATING_ENTITIES:
            raise bad("initiating_entity_invalid", "initiating_entity is not admin, user, policy or system")
        for name in ("reason_admin", "reason_user"):
            if name in e and not _localised_text(e[name]):
                raise bad(f"{name}_invalid", f"{name} must map language tags to strings")
        if event_type == CREDENTIAL_CHANGE:
            # CAEP 1.0 §3.3.1: credential_type and change_type REQUIRED.
            if not _nonempty_str(e.get("credential_type")):
                raise bad("credential_type_missing", "credential_type is required")
            if e.get("change_type") not in CREDENTIAL_CHANGE_TYPES:
                raise bad("change_type_invalid", "change_type must be create, revoke, update or delete")
        elif event_type == STREAM_UPDATED:
            # SSF 1.0 §8.1.5: status REQUIRED; reason OPTIONAL.
            if e.get("status") not in STREAM_STATUSES:
                raise bad("status_invalid", "status must be enabled, paused or disabled")
            if "reason" in e and not isinstance(e["reason"], str):
                raise bad("reason_invalid", "reason must be a string")
        elif event_type == VERIFICATION:
            # SSF 1.0 §8.1.4.1: state OPTIONAL (an opaque string).
            if "state" in e and not isinstance(e["state"], str):
                raise bad("state_invalid", "state must be a string")
        elif event_type == ACCOUNT_DISABLED and "reason" in e and not isinstance(e["reason"], str):
            # RISC 1.0 §2.3: reason optional (a string).
            raise bad("reason_invalid", "reason must be a string")
        if event_type in _STREAM_EVENTS and subject.format != "opaque":
            # SSF 1.0 §8.1.4.1 / §8.1.5: the sub_id of these events "MUST be of format opaque"
            # with the stream id as its id.
            raise bad("sub_id_not_stream", "the subject of a stream event must be an opaque stream id")

    def _claim(self, event: SecurityEvent) -> None:
        # RFC 8417 §2.2 jti / RFC 8935 §4: remember every jti until the SET would be too old to
        # accept anyway, so a duplicate inside the window is always recognised.
        until = max(event.iat + self.max_age + self.leeway, self.clock() + 1.0)
        try:
            first = self.replay_cache.add_if_absent(event.iss, _JTI_NAMESPACE + event.jti, until)
        except Exception as exc:
            log.error("replay store failed: %s", type(exc).__name__)
            raise SETUnavailableError(
                "replay_store_unavailable", "the duplicate check could not be performed"
            ) from None
        if not first:
            raise SETReplayed(event)
