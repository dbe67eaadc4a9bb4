"""Protocol decisions of the authorization endpoint about the End-User's consent and about
scope, free of Flask and storage: the Flask view asks, then adapts and renders.

* Clients the operator provisioned are *trusted* (first-party): no consent page, unless the
  request says ``prompt=consent``.
* Clients that registered themselves (RFC 7591) are untrusted: the End-User approves each
  scope once (remembered server-side per client and scope); ``offline_access`` is a scope like
  the others here, so it is granted to them only with consent (Core 1.0 §11).
"""

from __future__ import annotations

import enum
from collections.abc import Collection

__all__ = [
    "OFFLINE_ACCESS",
    "Decision",
    "decide",
    "needs_login",
    "requested_scopes",
    "unregistered_scopes",
    "without_prompt_login",
]

#: Core 1.0 §11.
OFFLINE_ACCESS = "offline_access"


class Decision(enum.Enum):
    #: Issue the authorization response now.
    GRANT = "grant"
    #: Show the consent page.
    ASK = "ask"
    #: ``prompt=none`` but consent is missing: answer ``consent_required`` to the redirect_uri.
    CONSENT_REQUIRED = "consent_required"


def requested_scopes(scope: str | None) -> frozenset[str]:
    return frozenset((scope or "").split())


def unregistered_scopes(registered: str | None, requested: str | None) -> list[str]:
    """The requested scope values the client is not registered for. RFC 6749 §3.3: the
    server "MAY fully or partially ignore the scope requested by the client"; this OP refuses
    instead of silently narrowing (the client would not learn why a scope is missing), with
    ``invalid_scope`` (§4.1.2.1 at the authorization endpoint, §5.2 at the token endpoint)."""
    allowed = set((registered or "").split())
    return sorted(s for s in requested_scopes(requested) if s not in allowed)


def decide(
    *,
    trusted: bool,
    prompt: Collection[str],
    requested: frozenset[str],
    approved: frozenset[str] | None,
    approving: bool = False,
) -> Decision:
    """Whether an authorization request of a signed-in End-User may be answered now.

    :param trusted: the client was provisioned by the operator (first-party).
    :param prompt: the request's ``prompt`` values.
    :param requested: the requested scopes (already checked against the registration).
    :param approved: what the End-User approved for this client before; None if never.
    :param approving: the request carries the End-User's approval from the consent page
        (CSRF-checked by the caller).
    """
    if approving:
        return Decision.GRANT
    if "consent" in prompt:
        # Core 1.0 §3.1.2.1 prompt=consent: "The Authorization Server SHOULD prompt the
        # End-User for consent before returning information to the Client." Always, even for
        # a trusted client and a remembered consent.
        needed = True
    elif trusted:
        needed = False
    else:
        # Core 1.0 §3.1.2.4: the OP obtains an authorization decision; for an untrusted client
        # every requested scope (offline_access included, Core 1.0 §11: "MUST ensure that the
        # prompt parameter contains consent unless other conditions for processing the
        # request permitting offline access to the requested resources are in place" - the
        # remembered explicit approval is that condition) must have been approved.
        needed = approved is None or not requested <= approved
    if not needed:
        return Decision.GRANT
    if "none" in prompt:
        # Core 1.0 §3.1.2.1 prompt=none: "The Authorization Server MUST NOT display any
        # authentication or consent user interface pages. An error is returned if [...] the
        # Client does not have pre-configured consent for the requested Claims".
        return Decision.CONSENT_REQUIRED
    return Decision.ASK


def needs_login(prompt: list[str], *, signed_in: bool, deciding_consent: bool) -> bool:
    """Core 1.0 §3.1.2.1: without a session the End-User signs in; ``prompt=login`` asks for
    re-authentication even with one (not while the consent form posts its answer back)."""
    return not signed_in or ("login" in prompt and not deciding_consent)


def without_prompt_login(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The authorization request to return to after the login page: ``prompt=login`` was just
    honoured, so asking again would send the End-User back to the login page forever."""
    out = []
    for key, value in params:
        if key == "prompt":
            value = " ".join(p for p in value.split() if p != "login")
        if value:
            out.append((key, value))
    return out
