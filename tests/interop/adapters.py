"""Interaction adapters used by the interop tests (examples of the plugin API)."""

from __future__ import annotations

import requests

from oidc_logout_conformance.adapters import FormLoginAdapter
from oidc_logout_conformance.opclient import FlowError


class StopAtConsent(FormLoginAdapter):
    """Logs in (oidc-provider's dev login form names its field ``login``) and refuses every
    consent page: what the old one-shot adapter effectively did."""

    def __init__(self) -> None:
        super().__init__("alice", "any", username_field="login")

    def interact(
        self, browser: requests.Session, page: requests.Response, purpose: str
    ) -> requests.Response | None:
        if purpose == "authorize" and 'name="prompt" value="consent"' in page.text:
            raise FlowError(f"the consent page at {page.url} was not submitted", step="consent page")
        return None
