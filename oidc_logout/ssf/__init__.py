"""OpenID Shared Signals Framework 1.0 transmitter (with CAEP 1.0 and RISC events) and OAuth
Global Token Revocation (draft-parecki-oauth-global-token-revocation).

One module per concern:

* :mod:`.subjects` - RFC 9493 subject identifiers: validation, the subject of an event, SSF
  §8.1.3.1 subject matching;
* :mod:`.metadata` - transmitter configuration metadata (SSF §7.1);
* :mod:`.streams` - stream management: configuration, status, subjects, verification (§8.1);
* :mod:`.events` - Security Event Tokens (RFC 8417 in the SSF §4 profile) recorded in the
  caller's transaction: CAEP session-revoked / credential-change, RISC account-disabled, SSF
  verification;
* :mod:`.push` - one RFC 8935 push attempt of an outbox row (channel ``ssf_push``);
* :mod:`.poll` - the RFC 8936 poll endpoint;
* :mod:`.gtr` - Global Token Revocation through the one termination path.

Framework-free: the Flask adapter is :mod:`oidc_logout.flask.ssf_views`.
"""

from __future__ import annotations

#: RFC 8935 / RFC 8936 delivery method URNs (SSF §6.1).
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"

#: SSF §4.1.1 / RFC 8417 §2.3: the explicit ``typ`` of a SET.
SET_TYP = "secevent+jwt"

SSF_EVENT = "https://schemas.openid.net/secevent/ssf/event-type/"
CAEP_EVENT = "https://schemas.openid.net/secevent/caep/event-type/"
RISC_EVENT = "https://schemas.openid.net/secevent/risc/event-type/"

VERIFICATION = SSF_EVENT + "verification"
STREAM_UPDATED = SSF_EVENT + "stream-updated"
SESSION_REVOKED = CAEP_EVENT + "session-revoked"
CREDENTIAL_CHANGE = CAEP_EVENT + "credential-change"
ACCOUNT_DISABLED = RISC_EVENT + "account-disabled"

#: The events a stream can carry (``events_supported``); verification and stream-updated are
#: sent whatever a stream asked for (SSF §8.1.4, §8.1.5).
EVENTS_SUPPORTED: tuple[str, ...] = (SESSION_REVOKED, CREDENTIAL_CHANGE, ACCOUNT_DISABLED)

__all__ = [
    "ACCOUNT_DISABLED",
    "CREDENTIAL_CHANGE",
    "EVENTS_SUPPORTED",
    "POLL",
    "PUSH",
    "SESSION_REVOKED",
    "SET_TYP",
    "STREAM_UPDATED",
    "VERIFICATION",
]
