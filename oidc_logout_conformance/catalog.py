"""Every check the suite can report: id -> profile, spec section, title, requirement level
and what it proves. The reports always list the whole catalogue of a profile (checks that
were not reached are ``skipped`` with the reason), and docs/conformance.md mirrors it.

Requirement levels follow the spec wording: a violated MUST is a ``fail``, a violated
SHOULD/RECOMMENDED/MAY is a ``warning`` (the exit code is non-zero only on failures).
"""

from __future__ import annotations

from dataclasses import dataclass

BCL = "OIDC Back-Channel Logout 1.0 (errata 1)"
FCL = "OIDC Front-Channel Logout 1.0"
RPI = "OIDC RP-Initiated Logout 1.0"


@dataclass(frozen=True)
class CheckSpec:
    profile: str  # "op" or "rp"
    section: str
    title: str
    level: str = "MUST"  # MUST | SHOULD
    oidf: str = ""  # closest OpenID Foundation conformance-suite test module, if any


def _op(section: str, title: str, level: str = "MUST", oidf: str = "") -> CheckSpec:
    return CheckSpec("op", section, title, level, oidf)


def _rp(section: str, title: str, level: str = "MUST", oidf: str = "") -> CheckSpec:
    return CheckSpec("rp", section, title, level, oidf)


_BCL_OP = "oidcc-backchannel-rp-initiated-logout"
_BCL_DISC = "oidcc-backchannel-logout-discovery-endpoint-verification"
_FCL_OP = "oidcc-frontchannel-rp-initiated-logout"
_RPI = "oidcc-rp-initiated-logout"
_RP = "oidcc-client-test-rp-backchannel-rpinitlogout"

CATALOG: dict[str, CheckSpec] = {
    # -- OP: discovery ------------------------------------------------------------------
    "DISC-4.3-issuer": _op(
        "OIDC Discovery 1.0 §4.3", "issuer in the discovery document equals the issuer URL it was fetched for"
    ),
    "BCL-2.1-supported": _op(f"{BCL} §2.1", "backchannel_logout_supported is true", oidf=_BCL_DISC),
    "BCL-2.1-session-supported": _op(
        f"{BCL} §2.1", "backchannel_logout_session_supported is true", "SHOULD", _BCL_DISC
    ),
    "FCL-3-supported": _op(
        f"{FCL} §3",
        "frontchannel_logout_supported is a boolean; true runs the front-channel checks (absent or false: skipped, front-channel logout is optional)",
        oidf="oidcc-frontchannel-logout-discovery-endpoint-verification",
    ),
    "FCL-3-session-supported": _op(
        f"{FCL} §3",
        "frontchannel_logout_session_supported is true",
        "SHOULD",
        "oidcc-frontchannel-logout-discovery-endpoint-verification",
    ),
    "RPI-2.1-end-session-endpoint": _op(
        f"{RPI} §2.1",
        "end_session_endpoint is advertised",
        oidf="oidcc-rp-initiated-logout-discovery-endpoint-verification",
    ),
    "RFC7009-endpoint": _op(
        "RFC 8414 §2 / RFC 7009 §2",
        "revocation_endpoint is advertised (else RFC 7009 checks are skipped)",
        "SHOULD",
    ),
    "RFC7662-endpoint": _op(
        "RFC 8414 §2 / RFC 7662 §2",
        "introspection_endpoint is advertised (else RFC 7662 checks are skipped)",
        "SHOULD",
    ),
    # -- OP: registration and login ---------------------------------------------------------
    "REG-7591-registration": _op(
        f"RFC 7591 §3.2.1, {BCL} §2.2, {FCL} §2",
        "dynamic registration accepts and returns the logout metadata",
    ),
    "REG-BCL-2.2-fragment": _op(
        f"{BCL} §2.2",
        "registering a backchannel_logout_uri with a fragment is refused (the URI MUST NOT include "
        "a fragment component)",
    ),
    "BCL-2.1-id-token-sid": _op(
        f"{BCL} §2.1 / {FCL} §3",
        "ID tokens carry a sid claim when session logout is supported (one per client allowed: a sid "
        "identifies the session at an RP)",
        oidf=_BCL_OP,
    ),
    # -- OP: RP-initiated logout ----------------------------------------------------------
    "RPI-2-logout": _op(
        f"{RPI} §2",
        "end_session with id_token_hint, registered post_logout_redirect_uri and state is accepted",
        oidf=_RPI,
    ),
    "RPI-2-post": _op(
        f"{RPI} §2",
        "end_session accepts POST (form-encoded) as well as GET: the OP MUST support both",
    ),
    "RPI-3-state": _op(
        f"{RPI} §3",
        "the post-logout redirect goes to the registered URI with state echoed",
        oidf="oidcc-rp-initiated-logout",
    ),
    "RPI-2-session-ended": _op(
        f"{RPI} §2", "after logout the OP session is over (prompt=none authorization gets no code)", oidf=_RPI
    ),
    "RPI-3-unregistered-uri": _op(
        f"{RPI} §3",
        "an unregistered post_logout_redirect_uri is never redirected to",
        oidf="oidcc-rp-initiated-logout-bad-post-logout-redirect-uri",
    ),
    "RPI-3-modified-uri": _op(
        f"{RPI} §3",
        "a registered post_logout_redirect_uri with an added query is never redirected to (exact match)",
        oidf="oidcc-rp-initiated-logout-query-added-to-post-logout-redirect-uri",
    ),
    "RPI-2-forged-hint": _op(
        f"{RPI} §2, §4",
        "a modified id_token_hint is an error: no redirect and the session is not ended",
        oidf="oidcc-rp-initiated-logout-modified-id-token-hint",
    ),
    "RPI-2-client-id-mismatch": _op(
        f"{RPI} §2",
        "client_id not matching the id_token_hint's aud is an error: no redirect, session not ended",
    ),
    "RPI-2-bad-hint": _op(
        f"{RPI} §2, §4",
        "an id_token_hint the OP did not issue (signed by the runner's own key; then a non-JWT string) is an error: no redirect, session not ended",
        oidf="oidcc-rp-initiated-logout-bad-id-token-hint",
    ),
    "RPI-3-no-state": _op(
        f"{RPI} §3",
        "id_token_hint and registered post_logout_redirect_uri without state: redirected to that URI, with no state parameter",
        oidf="oidcc-rp-initiated-logout-no-state",
    ),
    "RPI-6-no-id-token-hint": _op(
        f"{RPI} §6, §3",
        "client_id, registered post_logout_redirect_uri and state but no id_token_hint: the End-User is asked (a page, no redirect) and the session is not ended before confirming",
        "SHOULD",
        "oidcc-rp-initiated-logout-no-id-token-hint",
    ),
    "RPI-6-no-params": _op(
        f"{RPI} §2, §3, §6",
        "end_session with no parameters: a page (no redirect to any RP, no 5xx); ending the session without confirmation is a warning",
        oidf="oidcc-rp-initiated-logout-no-params",
    ),
    "RPI-3-only-state": _op(
        f"{RPI} §3, §6",
        "end_session with only state: no redirect to any RP (there is no post_logout_redirect_uri); ending the session without confirmation is a warning",
        oidf="oidcc-rp-initiated-logout-only-state",
    ),
    # -- OP: back-channel logout request and token ----------------------------------------
    "BCL-2.5-delivered": _op(
        f"{BCL} §2.5",
        "every RP of the session receives a back-channel logout request (bounded wait)",
        oidf=_BCL_OP,
    ),
    "BCL-2.5-form-post": _op(
        f"{BCL} §2.5",
        "POST, Content-Type application/x-www-form-urlencoded, exactly one logout_token parameter",
        oidf=_BCL_OP,
    ),
    "BCL-2.4-alg": _op(
        f"{BCL} §2.4, §2.6 step 3",
        "logout token alg is not none and equals the client's id_token_signed_response_alg",
    ),
    "BCL-2.4-signature": _op(
        f"{BCL} §2.4, §2.6 step 2", "logout token kid is in the OP's JWKS and the signature verifies"
    ),
    "BCL-2.4-typ": _op(f"{BCL} §2.4, §4.1", "logout token header typ is logout+jwt", "SHOULD"),
    "BCL-2.4-iss": _op(f"{BCL} §2.4", "iss equals the issuer"),
    "BCL-2.4-aud": _op(f"{BCL} §2.4", "aud is (or contains) the client_id"),
    "BCL-2.4-iat": _op(f"{BCL} §2.4", "iat is present, numeric and current"),
    "BCL-2.4-exp": _op(
        f"{BCL} §2.4 (errata 1: exp REQUIRED)", "exp is present, numeric, after iat and not yet passed"
    ),
    "BCL-2.4-jti": _op(f"{BCL} §2.4", "jti is a non-empty string"),
    "BCL-2.4-events": _op(
        f"{BCL} §2.4", "events is an object with the back-channel-logout member whose value is a JSON object"
    ),
    "BCL-2.4-sid-sub": _op(f"{BCL} §2.4", "the token contains sid, sub or both"),
    "BCL-2.4-no-nonce": _op(f"{BCL} §2.4", "the token contains no nonce claim"),
    "BCL-2.4-sid-match": _op(
        f"{BCL} §2.4, §2.1", "sid and sub equal those of the ID token issued in the logged-out session"
    ),
    "BCL-2.4-jti-unique": _op(f"{BCL} §2.4", "jti values are unique across logout tokens"),
    "BCL-2.5-one-per-rp": _op(
        f"{BCL} §2.5",
        "one logout request per RP for one logout (the receivers answer 200, no retry is due)",
        "SHOULD",
    ),
    "BCL-2.7-refresh-revoked": _op(
        f"{BCL} §2.7",
        "non-offline refresh tokens of the session stop working (refresh fails, introspection inactive)",
        "SHOULD",
    ),
    "BCL-2.7-revoked-before-notify": _op(
        f"{BCL} §2.7, §2.5",
        "when the logout token arrives, the session's access and refresh tokens are already "
        "inactive (introspection): an RP reacting to it must not find them usable",
        "SHOULD",
    ),
    # -- OP: front-channel ----------------------------------------------------------------
    "FCL-4-iframes": _op(
        f"{FCL} §4",
        "the logged-out page renders an iframe for each front-channel RP of the session",
        oidf=_FCL_OP,
    ),
    "FCL-3-iss-sid": _op(
        f"{FCL} §3", "iframe URLs carry iss (= issuer) and sid (= ID token sid)", oidf=_FCL_OP
    ),
    "FCL-4-browser": _op(
        f"{FCL} §2, §4 / {RPI} §3",
        "in a real browser (--browser), the logged-out page makes the user agent request every front-channel logout URI with iss and sid, and the post-logout redirect (with state) still arrives",
        oidf=_FCL_OP,
    ),
    # -- OP: RFC 7009 / RFC 7662 ----------------------------------------------------------
    "RFC7009-2.2-unknown-token": _op("RFC 7009 §2.2", "revoking an unknown token answers 200"),
    "RFC7009-2.1-revoke": _op(
        "RFC 7009 §2.1, §2.2", "revoking a refresh token answers 200 and the token no longer refreshes"
    ),
    "RFC7009-2.1-revoke-access": _op(
        "RFC 7009 §2, §2.1",
        "revoking an access token answers 200 and introspection then says active false",
        "SHOULD",
    ),
    "RFC7009-2.1-other-client": _op("RFC 7009 §2.1", "a client cannot revoke another client's token"),
    "RFC7662-2.2-active": _op(
        "RFC 7662 §2.2", "introspection of a fresh access token (and refresh token) says active true"
    ),
    "RFC7662-2.2-inactive": _op(
        "RFC 7662 §2.2", "introspection of a revoked access token (and refresh token) says active false"
    ),
    "RFC7662-2.1-auth": _op(
        "RFC 7662 §2.1, RFC 6749 §5.2", "unauthenticated introspection is refused with 401"
    ),
    # -- RP: back-channel endpoint --------------------------------------------------------
    "RP-BCL-2.8-valid": _rp(
        f"{BCL} §2.8",
        "a valid logout token (with sid) is answered 200 (204 is a warning: §2.8 asks RPs for 200; "
        "accepting 204 is a tolerance asked of OPs)",
        oidf=_RP,
    ),
    "RP-BCL-2.8-no-store": _rp(f"{BCL} §2.8", "responses carry Cache-Control: no-store", "SHOULD", _RP),
    "RP-BCL-2.7-session-ended": _rp(f"{BCL} §2.7", "the RP session matching the token's sid ends", oidf=_RP),
    "RP-BCL-2.7-sid-scoped": _rp(
        f"{BCL} §2.4 (sid identifies a session), §2.7",
        "a token naming one sid ends that session only: another session of the same sub is kept",
        "SHOULD",
    ),
    "RP-BCL-2.7-sub-only": _rp(
        f"{BCL} §2.4, §2.7", "a token with sub and no sid is accepted and ends all the user's sessions"
    ),
    "RP-BCL-2.6-alg-none": _rp(
        f"{BCL} §2.6 step 3", "alg none is rejected (400, session kept)", oidf=_RP + "-alg-none"
    ),
    "RP-BCL-2.6-hs256-pubkey": _rp(
        f"{BCL} §2.6 step 3, RFC 8725 §2.1",
        "HS256 keyed with the OP's public key is rejected",
        oidf=_RP + "-wrong-alg (closest; not the same token)",
    ),
    "RP-BCL-2.6-bad-signature": _rp(f"{BCL} §2.6 step 2", "a token with a broken signature is rejected"),
    "RP-BCL-2.6-unknown-kid": _rp(
        f"{BCL} §2.6 step 2", "a token signed by a key not in the OP's JWKS (unknown kid) is rejected"
    ),
    "RP-BCL-2.6-wrong-iss": _rp(
        f"{BCL} §2.6 step 4", "a token with another iss is rejected", oidf=_RP + "-wrong-iss"
    ),
    "RP-BCL-2.6-wrong-aud": _rp(
        f"{BCL} §2.6 step 4", "a token for another audience is rejected", oidf=_RP + "-wrong-aud"
    ),
    "RP-BCL-2.6-iat-missing": _rp(f"{BCL} §2.4, §2.6 step 4", "a token without iat is rejected"),
    "RP-BCL-2.6-iat-stale": _rp(
        f"{BCL} §2.6 step 4 (OIDC Core §3.1.3.7 step 10)",
        "a token issued an hour ago (exp still future) is rejected",
        "SHOULD",
    ),
    "RP-BCL-2.6-iat-future": _rp(
        f"{BCL} §2.6 step 4 (OIDC Core §3.1.3.7 step 10)",
        "a token issued an hour in the future is rejected",
        "SHOULD",
    ),
    "RP-BCL-2.6-exp-expired": _rp(f"{BCL} §2.6 step 4", "an expired token is rejected"),
    "RP-BCL-2.6-exp-missing": _rp(f"{BCL} §2.4 (errata 1: exp REQUIRED)", "a token without exp is rejected"),
    "RP-BCL-2.6-jti-missing": _rp(f"{BCL} §2.4", "a token without jti is rejected"),
    "RP-BCL-2.6-events-missing": _rp(
        f"{BCL} §2.6 step 6", "a token without events is rejected", oidf=_RP + "-no-event"
    ),
    "RP-BCL-2.6-events-not-object": _rp(
        f"{BCL} §2.4, §2.6 step 6",
        "a token whose events claim is not a JSON object (an array) is rejected",
        oidf=_RP + "-wrong-event (closest)",
    ),
    "RP-BCL-2.6-event-value-not-object": _rp(
        f"{BCL} §2.4, §2.6 step 6",
        "a token whose back-channel-logout event member value is not a JSON object (true, a string) "
        "is rejected",
    ),
    "RP-BCL-2.6-nonce": _rp(
        f"{BCL} §2.6 step 7", "a token with a nonce is rejected", oidf=_RP + "-with-nonce"
    ),
    "RP-BCL-2.6-no-sid-sub": _rp(f"{BCL} §2.6 step 5", "a token with neither sid nor sub is rejected"),
    "RP-BCL-2.6-replay": _rp(
        f"{BCL} §2.6 step 8 (optional)",
        "a replayed jti is rejected and the re-established session is kept",
        "SHOULD",
    ),
    "RP-BCL-2.6-typ": _rp(
        f"{BCL} §4.1, RFC 8725 §3.11",
        "a token explicitly typed as another kind of JWT (typ at+jwt) is rejected",
        "SHOULD",
    ),
    "RP-BCL-2.8-error-body": _rp(
        f"{BCL} §2.8", "400 responses carry a JSON body with an error member", "SHOULD"
    ),
    # -- RP: front-channel endpoint (--frontchannel-uri) ----------------------------------
    "RP-FCL-2-session-ended": _rp(
        f"{FCL} §2",
        "GET frontchannel_logout_uri with iss and sid of an RP session (no cookie) ends that session",
        oidf="oidcc-client-test-rp-frontchannel-rpinitlogout (closest: the OIDF module loads the iframe in the user's browser)",
    ),
    "RP-FCL-2-wrong-iss": _rp(
        f"{FCL} §2",
        "a front-channel request with another iss (the session's sid) leaves the session alone",
        "SHOULD",
    ),
    "RP-FCL-2-no-store": _rp(f"{FCL} §2", "front-channel responses carry Cache-Control: no-store", "SHOULD"),
}


#: The core scenarios of each profile: a run in which one of them could not execute ends
#: ``incomplete`` (exit status 3), whatever its checks say - a check that never ran proves
#: nothing, and a run that never completed a login must not pass.
CORE_SCENARIOS: dict[str, dict[str, str]] = {
    "op": {
        "discovery": "discovery document and JWKS fetched, clients registered or configured",
        "login": "one End-User login authorized every client (code flow with PKCE, tokens issued)",
        "logout": "RP-initiated logout with id_token_hint ran and the session state was observed "
        "with prompt=none for every client",
        "backchannel": "a logout token arrived for every client with a backchannel_logout_uri",
        "token-revocation": "a token was issued, introspected and revoked (RFC 7009 / RFC 7662; "
        "not applicable when the OP advertises neither endpoint)",
    },
    "rp": {
        "backchannel-endpoint": "the RP's back-channel logout URI answered a valid logout token",
        "rp-session": "RP sessions were established and observed through the session adapter",
    },
}


def op_checks() -> list[str]:
    return [k for k, v in CATALOG.items() if v.profile == "op"]


def rp_checks() -> list[str]:
    return [k for k, v in CATALOG.items() if v.profile == "rp"]
