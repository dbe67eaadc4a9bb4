"""RP profile checks: the RP's back-channel logout endpoint (Back-Channel Logout 1.0 §2.6
validation, §2.7 actions, §2.8 response) exercised with valid and invalid logout tokens."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from ..adapters import SessionAdapter
from ..model import Recorder, Status
from ..redact import decode_jwt
from ..rp_op import EVENT, RunnerOP


@dataclass
class Sent:
    token: str
    status: int
    # HTTP field names are case-insensitive (RFC 9110 §5.1): Express sends "cache-control".
    headers: CaseInsensitiveDict[str]
    body: str

    def evidence(self) -> dict[str, Any]:
        return {
            "sent": {
                "Content-Type": "application/x-www-form-urlencoded",
                "logout_token": decode_jwt(self.token),
            },
            "response": {
                "status": self.status,
                "cache_control": self.headers.get("Cache-Control"),
                "content_type": self.headers.get("Content-Type"),
                "body": self.body[:300],
            },
        }


class RPChecks:
    def __init__(
        self,
        rec: Recorder,
        op: RunnerOP,
        backchannel_uri: str,
        client_id: str,
        sessions: SessionAdapter | None,
    ) -> None:
        self.rec = rec
        self.op = op
        self.uri = backchannel_uri
        self.client_id = client_id
        self.sessions = sessions
        self.http = requests.Session()
        self.responses: list[tuple[str, Sent]] = []  # (check id, response) for the no-store check
        self.errors: list[tuple[str, Sent]] = []  # 400 responses for the error-body check

    def send(self, token: str) -> Sent:
        r = self.http.post(self.uri, data={"logout_token": token}, timeout=15, allow_redirects=False)
        return Sent(token, r.status_code, CaseInsensitiveDict(r.headers), r.text)

    def _ids(self) -> tuple[str, str]:
        return f"conformance-user-{secrets.token_hex(4)}", f"conformance-sid-{secrets.token_hex(8)}"

    def _establish(self, sub: str, sid: str | None) -> tuple[Any, str | None]:
        if self.sessions is None:
            return None, None
        try:
            handle = self.sessions.establish(sub, sid)
        except Exception as exc:
            return None, f"could not establish an RP session: {exc}"
        try:
            active = self.sessions.is_active(handle)
        except Exception as exc:
            return None, f"the new RP session could not be observed: {exc}"
        if not active:
            return None, "the session adapter's session is not active right after login"
        return handle, None

    def _active(self, handle: Any) -> bool | None:
        """Whether the session lives; ``None`` when there is no session to ask about or the
        RP's answer said neither (then the rp-session scenario is incomplete: a check that
        could not observe the session proves nothing about it)."""
        if handle is None or self.sessions is None:
            return None
        try:
            return bool(self.sessions.is_active(handle))
        except Exception as exc:
            self.rec.incomplete("rp-session", "observing an RP session", str(exc))
            return None

    def _session_observed(self, problem: str | None) -> None:
        """Core scenario rp-session: sessions could be established and observed."""
        if self.sessions is None:
            self.rec.incomplete(
                "rp-session",
                "session adapter",
                "no session adapter was configured: whether logout tokens end RP sessions was not "
                "observed (--session-adapter)",
            )
        elif problem:
            self.rec.incomplete("rp-session", "establishing an RP session", problem)
        else:
            self.rec.complete("rp-session")

    # -- valid tokens ---------------------------------------------------------------------
    def valid(self) -> None:
        sub, sid = self._ids()
        handle, problem = self._establish(sub, sid)
        sent = self.send(self.op.sign(self.op.claims(self.client_id, sub, sid)))
        self.responses.append(("RP-BCL-2.8-valid", sent))
        # backchannel §2.8: "If the logout succeeded, the RP MUST respond with HTTP 200 OK."
        # The 204 it mentions is what OPs must tolerate, not a second answer for RPs.
        self.rec.verdict(
            "RP-BCL-2.8-valid",
            [] if sent.status in (200, 204) else [f"a valid logout token was answered {sent.status}"],
            ["answered 204; §2.8 says the RP MUST respond 200 OK (OPs are only asked to accept 204)"]
            if sent.status == 204
            else [],
            evidence=sent.evidence(),
        )
        if sent.status in (200, 204):
            self.rec.complete("backchannel-endpoint")
        else:
            self.rec.incomplete(
                "backchannel-endpoint",
                "sending a valid logout token",
                f"the RP answered {sent.status}: no accepted logout could be observed",
            )
        self._session_observed(problem)
        if self.sessions is None:
            self.rec.skip("RP-BCL-2.7-session-ended", "no session adapter was configured")
        elif problem:
            self.rec.record("RP-BCL-2.7-session-ended", Status.FAIL, problem)
        else:
            active = self._active(handle)
            ev = {"sub": sub, "sid": sid, "active_after": active, **sent.evidence()}
            if active is None:
                self.rec.skip("RP-BCL-2.7-session-ended", "the session could not be observed", ev)
            else:
                self.rec.verdict(
                    "RP-BCL-2.7-session-ended",
                    ["the RP session is still active"] if active else [],
                    evidence=ev,
                )

    def sub_only(self) -> None:
        sub, _ = self._ids()
        sids = [f"conformance-sid-{secrets.token_hex(8)}" for _ in range(2)]
        handles = []
        problem = None
        for s in sids:
            h, p = self._establish(sub, s)
            handles.append(h)
            problem = problem or p
        sent = self.send(self.op.sign(self.op.claims(self.client_id, sub, None)))
        self.responses.append(("RP-BCL-2.7-sub-only", sent))
        failures = [] if sent.status in (200, 204) else [f"a valid sub-only token was answered {sent.status}"]
        ev: dict[str, Any] = sent.evidence()
        if self.sessions is not None and not problem:
            states = [self._active(h) for h in handles]
            still = [s for s, a in zip(sids, states, strict=True) if a]
            ev["still_active"] = still
            if still:
                failures.append(f"{len(still)} of the user's 2 sessions are still active")
            elif None in states:
                self.rec.skip("RP-BCL-2.7-sub-only", "a session could not be observed", ev)
                return
        elif problem:
            failures.append(problem)
        self.rec.verdict("RP-BCL-2.7-sub-only", failures, evidence=ev)

    def sid_scoped(self) -> None:
        """backchannel §2.4: sid is the "Session ID - String identifier for a Session"; §2.7:
        the RP logs out the session(s) the token identifies. A token naming one sid must not
        end the user's other sessions (their logins are still alive at the OP)."""
        if self.sessions is None:
            self.rec.skip("RP-BCL-2.7-sid-scoped", "no session adapter was configured")
            return
        sub, sid = self._ids()
        other_sid = f"conformance-sid-{secrets.token_hex(8)}"
        handle, problem = self._establish(sub, sid)
        other, problem2 = self._establish(sub, other_sid)
        if problem or problem2:
            self.rec.record("RP-BCL-2.7-sid-scoped", Status.SKIPPED, str(problem or problem2))
            return
        sent = self.send(self.op.sign(self.op.claims(self.client_id, sub, sid)))
        self.responses.append(("RP-BCL-2.7-sid-scoped", sent))
        ended, kept = self._active(handle) is False, self._active(other)
        ev = {**sent.evidence(), "named_session_ended": ended, "other_session_active": kept}
        if kept is None:
            self.rec.skip("RP-BCL-2.7-sid-scoped", "the other session could not be observed", ev)
            return
        if not ended:
            self.rec.skip(
                "RP-BCL-2.7-sid-scoped", "the named session did not end (see RP-BCL-2.7-session-ended)", ev
            )
            return
        self.rec.verdict(
            "RP-BCL-2.7-sid-scoped",
            [] if kept else [f"the user's other session ({other_sid}) ended too"],
            evidence=ev,
        )

    def replay(self) -> None:
        sub, sid = self._ids()
        self._establish(sub, sid)  # a live session for the first delivery to end
        token = self.op.sign(self.op.claims(self.client_id, sub, sid))
        first = self.send(token)
        if first.status not in (200, 204):
            self.rec.skip("RP-BCL-2.6-replay", f"the original token was not accepted ({first.status})")
            return
        handle2, _ = self._establish(sub, sid)
        second = self.send(token)
        self.responses.append(("RP-BCL-2.6-replay", second))
        failures = []
        if second.status in (200, 204):
            failures.append(f"the replayed token was accepted ({second.status})")
        elif second.status == 400:
            self.errors.append(("RP-BCL-2.6-replay", second))
        if handle2 is not None and self._active(handle2) is False:
            failures.append("the replayed token ended the re-established session")
        self.rec.verdict(
            "RP-BCL-2.6-replay", failures, evidence={"first": first.evidence(), "replay": second.evidence()}
        )

    # -- invalid tokens -------------------------------------------------------------------
    def invalid(self, check_id: str, *makers: Callable[[str, str], str]) -> None:
        """Each maker builds one variant of the defect; every variant is sent for a session of
        its own, and each must be rejected without ending that session."""
        failures: list[str] = []
        warnings: list[str] = []
        evs = []
        for make in makers:
            f, w, ev = self._invalid_one(check_id, make)
            failures += f
            warnings += w
            evs.append(ev)
        self.rec.verdict(
            check_id, failures, warnings, evidence=evs[0] if len(evs) == 1 else {"variants": evs}
        )

    def _invalid_one(
        self, check_id: str, make: Callable[[str, str], str]
    ) -> tuple[list[str], list[str], dict[str, Any]]:
        sub, sid = self._ids()
        handle, problem = self._establish(sub, sid)
        sent = self.send(make(sub, sid))
        self.responses.append((check_id, sent))
        failures: list[str] = []
        warnings: list[str] = []
        if 200 <= sent.status < 300:
            failures.append(f"the invalid token was accepted ({sent.status})")
        elif sent.status == 400:
            self.errors.append((check_id, sent))
        elif 400 < sent.status < 500:
            warnings.append(f"rejected with {sent.status}; §2.8 says 400 Bad Request")
        else:
            failures.append(f"answered {sent.status}; §2.8 requires 400 Bad Request")
        ev = sent.evidence()
        if handle is not None:
            active = self._active(handle)
            ev["session_active_after"] = active
            if active is False:
                failures.append("the RP session was ended by an invalid token")
        elif problem:
            ev["session"] = problem
        return failures, warnings, ev

    def run_all(self) -> None:
        op, cid = self.op, self.client_id
        other_key = op.stranger_key
        now = int(time.time())
        self.valid()
        self.sid_scoped()
        self.sub_only()
        cases: list[tuple[str, Callable[[str, str], str]]] = [
            ("RP-BCL-2.6-alg-none", lambda s, d: op.sign(op.claims(cid, s, d), alg="none")),
            ("RP-BCL-2.6-hs256-pubkey", lambda s, d: op.sign(op.claims(cid, s, d), alg="HS256")),
            ("RP-BCL-2.6-bad-signature", lambda s, d: op.break_signature(op.sign(op.claims(cid, s, d)))),
            ("RP-BCL-2.6-unknown-kid", lambda s, d: op.sign(op.claims(cid, s, d), key=other_key)),
            ("RP-BCL-2.6-wrong-iss", lambda s, d: op.sign(op.claims(cid, s, d, iss=op.issuer + "/other"))),
            ("RP-BCL-2.6-wrong-aud", lambda s, d: op.sign(op.claims(cid, s, d, aud="another-client"))),
            ("RP-BCL-2.6-iat-missing", lambda s, d: op.sign(op.claims(cid, s, d, iat=None))),
            (
                "RP-BCL-2.6-iat-stale",
                lambda s, d: op.sign(op.claims(cid, s, d, iat=now - 3600, exp=now + 120)),
            ),
            (
                "RP-BCL-2.6-iat-future",
                lambda s, d: op.sign(op.claims(cid, s, d, iat=now + 3600, exp=now + 3720)),
            ),
            (
                "RP-BCL-2.6-exp-expired",
                lambda s, d: op.sign(op.claims(cid, s, d, iat=now - 250, exp=now - 180)),
            ),
            ("RP-BCL-2.6-exp-missing", lambda s, d: op.sign(op.claims(cid, s, d, exp=None))),
            ("RP-BCL-2.6-jti-missing", lambda s, d: op.sign(op.claims(cid, s, d, jti=None))),
            ("RP-BCL-2.6-events-missing", lambda s, d: op.sign(op.claims(cid, s, d, events=None))),
            ("RP-BCL-2.6-events-not-object", lambda s, d: op.sign(op.claims(cid, s, d, events=[EVENT]))),
            ("RP-BCL-2.6-nonce", lambda s, d: op.sign(op.claims(cid, s, d, nonce=secrets.token_urlsafe(8)))),
            ("RP-BCL-2.6-no-sid-sub", lambda s, d: op.sign(op.claims(cid, None, None))),
            ("RP-BCL-2.6-typ", lambda s, d: op.sign(op.claims(cid, s, d), header={"typ": "at+jwt"})),
        ]
        for check_id, make in cases:
            self.invalid(check_id, make)
        # backchannel §2.4: the member's "value MUST be a JSON object" ({} recommended).
        self.invalid(
            "RP-BCL-2.6-event-value-not-object",
            lambda s, d: op.sign(op.claims(cid, s, d, events={EVENT: True})),
            lambda s, d: op.sign(op.claims(cid, s, d, events={EVENT: "x"})),
        )
        self.replay()
        missing = [
            f"{c}: Cache-Control {s.headers.get('Cache-Control')!r}"
            for c, s in self.responses
            if "no-store" not in (s.headers.get("Cache-Control") or "").lower()
        ]
        self.rec.verdict("RP-BCL-2.8-no-store", missing, evidence={"responses": len(self.responses)})
        bad_body = []
        for c, s in self.errors:
            try:
                body = json.loads(s.body)
                if not isinstance(body, dict) or not isinstance(body.get("error"), str):
                    bad_body.append(f"{c}: JSON without an error member")
            except ValueError:
                bad_body.append(f"{c}: body is not JSON")
        if self.errors:
            self.rec.verdict(
                "RP-BCL-2.8-error-body", bad_body, evidence={"error_responses": len(self.errors)}
            )
        else:
            self.rec.skip("RP-BCL-2.8-error-body", "the RP answered no request with 400")
