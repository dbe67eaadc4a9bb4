"""OP metadata checks: Discovery 1.0 §4.3, Back-Channel §2.1, Front-Channel §3,
RP-Initiated §2.1, RFC 8414 §2 (revocation/introspection endpoints)."""

from __future__ import annotations

from typing import Any

from ..model import Recorder, Status


def check_discovery(rec: Recorder, issuer: str, doc: dict[str, Any]) -> dict[str, bool]:
    """Record the metadata checks; return which optional features the run should exercise."""
    ev = {
        "metadata": {
            k: doc.get(k)
            for k in (
                "issuer",
                "end_session_endpoint",
                "backchannel_logout_supported",
                "backchannel_logout_session_supported",
                "frontchannel_logout_supported",
                "frontchannel_logout_session_supported",
                "revocation_endpoint",
                "introspection_endpoint",
                "registration_endpoint",
                "jwks_uri",
            )
        }
    }
    # Discovery §4.3: "The issuer value returned MUST be identical to the Issuer URL that was
    # used as the prefix to /.well-known/openid-configuration".
    rec.verdict(
        "DISC-4.3-issuer",
        [] if doc.get("issuer") == issuer else [f"issuer is {doc.get('issuer')!r}, expected {issuer!r}"],
        evidence={"expected": issuer, "issuer": doc.get("issuer")},
    )
    bcl = doc.get("backchannel_logout_supported") is True
    rec.verdict("BCL-2.1-supported", [] if bcl else ["backchannel_logout_supported is not true"], evidence=ev)
    rec.verdict(
        "BCL-2.1-session-supported",
        []
        if doc.get("backchannel_logout_session_supported") is True
        else ["backchannel_logout_session_supported is not true (sid in logout tokens not promised)"],
        evidence=ev,
    )
    fcl_value = doc.get("frontchannel_logout_supported")
    fcl = fcl_value is True
    fc_checks = ("FCL-3-session-supported", "FCL-4-iframes", "FCL-3-iss-sid", "FCL-4-browser")
    if fcl:
        rec.verdict("FCL-3-supported", evidence=ev)
        rec.verdict(
            "FCL-3-session-supported",
            []
            if doc.get("frontchannel_logout_session_supported") is True
            else ["frontchannel_logout_session_supported is not true"],
            evidence=ev,
        )
    elif fcl_value is None or fcl_value is False:
        # Front-Channel Logout is optional: an OP that does not offer it is not at fault.
        reason = "the OP does not advertise frontchannel_logout_supported"
        for cid in ("FCL-3-supported", *fc_checks):
            rec.skip(cid, reason)
    else:
        # FCL §3: "frontchannel_logout_supported OPTIONAL. Boolean value ..."
        rec.verdict(
            "FCL-3-supported", [f"frontchannel_logout_supported is {fcl_value!r}, not a boolean"], evidence=ev
        )
        for cid in fc_checks:
            rec.skip(
                cid, "frontchannel_logout_supported is not a boolean: front-channel logout not exercised"
            )
    end_session = doc.get("end_session_endpoint")
    rec.verdict(
        "RPI-2.1-end-session-endpoint",
        []
        if isinstance(end_session, str) and end_session.startswith(("https://", "http://"))
        else ["end_session_endpoint is missing or not a URL"],
        evidence=ev,
    )
    revocation = isinstance(doc.get("revocation_endpoint"), str)
    introspection = isinstance(doc.get("introspection_endpoint"), str)
    rec.verdict(
        "RFC7009-endpoint", [] if revocation else ["revocation_endpoint is not advertised"], evidence=ev
    )
    rec.verdict(
        "RFC7662-endpoint", [] if introspection else ["introspection_endpoint is not advertised"], evidence=ev
    )
    if not revocation:
        for cid in ("RFC7009-2.2-unknown-token", "RFC7009-2.1-revoke", "RFC7009-2.1-other-client"):
            rec.skip(cid, "the OP advertises no revocation_endpoint")
    if not revocation and introspection:
        rec.skip(
            "RFC7662-2.2-inactive",
            "needs a token revoked at the revocation_endpoint, which is not advertised",
        )
    if not introspection:
        for cid in ("RFC7662-2.2-active", "RFC7662-2.2-inactive", "RFC7662-2.1-auth"):
            rec.skip(cid, "the OP advertises no introspection_endpoint")
    return {
        "backchannel": bcl,
        "frontchannel": fcl,
        "revocation": revocation,
        "introspection": introspection,
        "end_session": isinstance(end_session, str),
        "status": rec.results["DISC-4.3-issuer"].status is Status.PASS,
    }
