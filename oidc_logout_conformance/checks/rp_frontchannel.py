"""RP profile, front-channel section (``--frontchannel-uri``): Front-Channel Logout 1.0 §2.
The runner plays the OP's logged-out page: it GETs the RP's frontchannel_logout_uri with the
``iss`` and ``sid`` query parameters of a session established through the session adapter
(no cookie is sent: with ``frontchannel_logout_session_required`` the RP identifies the
session by iss and sid, and a third-party iframe often carries no cookie at all)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

import requests

from ..adapters import SessionAdapter
from ..model import Recorder, Status

FC_CHECKS = ("RP-FCL-2-session-ended", "RP-FCL-2-wrong-iss", "RP-FCL-2-no-store")


def with_params(uri: str, **params: str) -> str:
    """FCL §2: a query already in the logout URI MUST be retained when adding parameters."""
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


class RPFrontChannelChecks:
    def __init__(
        self,
        rec: Recorder,
        issuer: str,
        uri: str,
        sessions: SessionAdapter | None,
        establish: Any,
        active: Any,
    ) -> None:
        self.rec = rec
        self.issuer = issuer
        self.uri = uri
        self.sessions = sessions
        self.establish = establish  # RPChecks._establish: (sub, sid) -> (handle, problem)
        self.active = active  # RPChecks._active: handle -> bool | None (None: not observed)
        self.responses: list[tuple[str, requests.Response]] = []

    def get(self, label: str, iss: str, sid: str) -> requests.Response:
        resp = requests.get(with_params(self.uri, iss=iss, sid=sid), timeout=15, allow_redirects=False)
        self.responses.append((label, resp))
        return resp

    @staticmethod
    def _ev(resp: requests.Response, iss: str, sid: str) -> dict[str, Any]:
        return {
            "sent": {"method": "GET", "iss": iss, "sid": sid, "cookies": "none"},
            "response": {
                "status": resp.status_code,
                "cache_control": resp.headers.get("Cache-Control"),
                "pragma": resp.headers.get("Pragma"),
                "content_type": resp.headers.get("Content-Type"),
            },
        }

    def _ids(self) -> tuple[str, str]:
        return f"conformance-user-{secrets.token_hex(4)}", f"conformance-fc-sid-{secrets.token_hex(8)}"

    def wrong_iss(self) -> None:
        sub, sid = self._ids()
        handle, problem = self.establish(sub, sid)
        other = self.issuer + "/other-op"
        resp = self.get("RP-FCL-2-wrong-iss", other, sid)
        ev = self._ev(resp, other, sid)
        if self.sessions is None:
            self.rec.skip("RP-FCL-2-wrong-iss", "no session adapter was configured", ev)
            return
        if problem:
            self.rec.record("RP-FCL-2-wrong-iss", Status.FAIL, problem, ev)
            return
        active = self.active(handle)
        ev["session_active_after"] = active
        if active is None:
            self.rec.skip("RP-FCL-2-wrong-iss", "the session could not be observed", ev)
            return
        self.rec.verdict(
            "RP-FCL-2-wrong-iss",
            [] if active else ["a request naming another issuer ended the session"],
            evidence=ev,
        )

    def session_ended(self) -> None:
        sub, sid = self._ids()
        handle, problem = self.establish(sub, sid)
        resp = self.get("RP-FCL-2-session-ended", self.issuer, sid)
        ev = self._ev(resp, self.issuer, sid)
        if self.sessions is None:
            self.rec.skip("RP-FCL-2-session-ended", "no session adapter was configured", ev)
            return
        if problem:
            self.rec.record("RP-FCL-2-session-ended", Status.FAIL, problem, ev)
            return
        active = self.active(handle)
        ev["session_active_after"] = active
        if active is None:
            self.rec.skip("RP-FCL-2-session-ended", "the session could not be observed", ev)
            return
        failures = ["the RP session is still active"] if active else []
        if resp.status_code >= 500:
            failures.append(f"answered {resp.status_code}")
        self.rec.verdict("RP-FCL-2-session-ended", failures, evidence=ev)

    def run_all(self) -> None:
        try:
            self.wrong_iss()
            self.session_ended()
        except requests.RequestException as exc:
            for cid in FC_CHECKS:
                self.rec.skip(cid, f"the front-channel logout URI could not be reached: {exc}")
            if not self.responses:
                self.rec.record("RP-FCL-2-session-ended", Status.FAIL, f"{self.uri} is not reachable: {exc}")
                return
        missing = [
            f"{label}: Cache-Control {r.headers.get('Cache-Control')!r}"
            for label, r in self.responses
            if "no-store" not in (r.headers.get("Cache-Control") or "").lower()
        ]
        self.rec.verdict("RP-FCL-2-no-store", missing, evidence={"responses": len(self.responses)})
