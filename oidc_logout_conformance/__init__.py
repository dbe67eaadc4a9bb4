"""oidc-logout-conformance: a logout conformance suite for any OpenID Provider or relying party.

Profiles: ``op`` (Back-Channel Logout 1.0 with errata, Front-Channel Logout 1.0, RP-Initiated
Logout 1.0, RFC 7009, RFC 7662 as seen from the OP's side) and ``rp`` (an RP's back-channel
logout endpoint). Entry point: :func:`oidc_logout_conformance.runner.main`. See docs/conformance.md.
"""
