"""Poll-Based SET delivery (RFC 8936), receiver side.

:func:`poll` makes one poll request; :class:`PollingReceiver` loops: it collects SETs, has the
:class:`~oidc_logout.rp.ssf_receiver.SSFReceiver` validate and process each, acknowledges the
successes (``ack``) and reports the rejections (``setErrs``) in its next request. The loop is
bounded (``max_requests``) and stoppable (a ``threading.Event``); SETs this receiver could not
process because its own storage failed are neither acknowledged nor rejected, so the
transmitter offers them again.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from ._http import HTTPLimits, check_url, read_capped
from .errors import OutboundHTTPError
from .ssf_errors import SETError, SETUnavailableError
from .ssf_receiver import ReceivedEvent, SSFReceiver

__all__ = ["PollError", "PollResponse", "PollSummary", "PollingReceiver", "poll"]

log = logging.getLogger(__name__)


class PollError(OutboundHTTPError):
    """The poll endpoint refused the request or answered something that is not RFC 8936."""


@dataclass(frozen=True)
class PollResponse:
    """RFC 8936 §2.5: ``sets`` (jti → SET) and ``moreAvailable``."""

    sets: Mapping[str, str]
    more_available: bool


@dataclass
class PollSummary:
    """What a :meth:`PollingReceiver.run` did."""

    requests: int = 0
    received: list[ReceivedEvent] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)
    #: jtis left for redelivery because this receiver's own storage failed.
    deferred: list[str] = field(default_factory=list)


def poll(
    endpoint: str,
    token: str,
    *,
    max_events: int | None = None,
    return_immediately: bool | None = None,
    acks: Iterable[str] = (),
    set_errs: Mapping[str, Mapping[str, str]] | None = None,
    session: requests.Session | None = None,
    limits: HTTPLimits = HTTPLimits(),
) -> PollResponse:
    """One RFC 8936 poll request: POST JSON with ``maxEvents``, ``returnImmediately``, ``ack``
    and ``setErrs`` (§2.2, each only when given), bearer ``token`` (SSF 1.0 §7.1.1: the
    transmitter's authorization scheme also protects its poll endpoint)."""
    check_url(endpoint, "poll endpoint", PollError)
    body: dict[str, Any] = {}
    if max_events is not None:
        if max_events < 0:
            raise ValueError("max_events must be >= 0")
        body["maxEvents"] = max_events
    if return_immediately is not None:
        body["returnImmediately"] = return_immediately
    ack_list = list(acks)
    if ack_list:
        body["ack"] = ack_list
    if set_errs:
        body["setErrs"] = {jti: dict(err) for jti, err in set_errs.items()}
    http = session or requests.Session()
    # A long poll (returnImmediately false) may legitimately be held open by the transmitter.
    timeout = limits.timeout if return_immediately is not False else (limits.connect_timeout, 120.0)
    try:
        resp = http.post(
            endpoint,
            data=json.dumps(body),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Authorization": f"Bearer {token}",
            },
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as exc:
        raise PollError("fetch_failed", f"poll request failed: {type(exc).__name__}") from None
    with resp:
        raw = read_capped(resp, limits, PollError)
        status = resp.status_code
    if status != 200:
        # RFC 8936 §2.5.1: errors carry {"err", "description"}; only the code is reported.
        err = ""
        try:
            doc = json.loads(raw)
            if isinstance(doc, dict) and isinstance(doc.get("err"), str):
                err = doc["err"][:64]
        except ValueError:
            pass
        raise PollError("bad_status", f"poll endpoint answered {status} {err}".strip())
    try:
        doc = json.loads(raw)
    except ValueError:
        raise PollError("bad_json", "poll response is not JSON") from None
    sets = doc.get("sets") if isinstance(doc, dict) else None
    if not isinstance(sets, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sets.items()
    ):
        raise PollError("bad_json", "poll response has no sets object of jti → SET strings")
    more = doc.get("moreAvailable", False)
    return PollResponse(sets=sets, more_available=more is True)


def _unverified_jti(set_token: str) -> str | None:
    try:
        part = set_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return None
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return jti if isinstance(jti, str) else None


class PollingReceiver:
    """Polls one stream's endpoint and feeds every SET to an :class:`SSFReceiver`.

    :param token: the bearer access token, or a callable returning a current one.
    :param max_events: ``maxEvents`` of each request.
    """

    def __init__(
        self,
        receiver: SSFReceiver,
        endpoint: str,
        token: str | Callable[[], str],
        *,
        max_events: int = 20,
        session: requests.Session | None = None,
        limits: HTTPLimits = HTTPLimits(),
    ) -> None:
        check_url(endpoint, "poll endpoint", PollError)
        self.receiver = receiver
        self.endpoint = endpoint
        self._token = token
        self.max_events = max_events
        self.session = session or requests.Session()
        self.limits = limits
        self._acks: list[str] = []
        self._errs: dict[str, dict[str, str]] = {}

    def _bearer(self) -> str:
        return self._token() if callable(self._token) else self._token

    def run(
        self,
        *,
        max_requests: int = 100,
        return_immediately: bool = True,
        stop: threading.Event | None = None,
    ) -> PollSummary:
        """Poll until the transmitter has nothing more (``moreAvailable`` false with
        ``returnImmediately``), ``stop`` is set, or ``max_requests`` requests were made; then
        send the outstanding acknowledgements (an acknowledge-only request, RFC 8936 §2.4.2).

        Raises :class:`PollError` if the endpoint fails; acknowledgements not yet sent are kept
        and go out with the next run.
        """
        summary = PollSummary()
        while summary.requests < max_requests and not (stop is not None and stop.is_set()):
            more = self._poll_once(summary, self.max_events, return_immediately)
            if return_immediately and not more:
                break
        if self._acks or self._errs:
            # RFC 8936 §2.4.2: acknowledge without asking for more SETs (maxEvents 0).
            self._poll_once(summary, 0, True)
        return summary

    def _poll_once(self, summary: PollSummary, max_events: int, return_immediately: bool) -> bool:
        acks, errs = list(self._acks), dict(self._errs)
        resp = poll(
            self.endpoint,
            self._bearer(),
            max_events=max_events,
            return_immediately=return_immediately,
            acks=acks,
            set_errs=errs,
            session=self.session,
            limits=self.limits,
        )
        summary.requests += 1
        # The transmitter has them now (RFC 8936 §2.4.3/§2.4.4): never send them twice.
        summary.acknowledged.extend(acks)
        summary.rejected.update(errs)
        self._acks = [a for a in self._acks if a not in set(acks)]
        for jti in errs:
            self._errs.pop(jti, None)
        for jti, set_token in resp.sets.items():
            self._handle(summary, jti, set_token)
        return resp.more_available

    def _handle(self, summary: PollSummary, jti: str, set_token: str) -> None:
        # RFC 8936 §2.5: each key of "sets" "is a string that contains the jti value of the SET".
        if _unverified_jti(set_token) != jti:
            self._errs[jti] = SETError(
                "invalid_request", "jti_mismatch", "the key is not the SET's jti"
            ).as_json()
            return
        try:
            record = self.receiver.receive(set_token)
        except SETUnavailableError:
            summary.deferred.append(jti)  # neither ack nor error: offered again later
            return
        except SETError as exc:
            # RFC 8936 §2.4.4: "setErrs ... the jti of a SET that the recipient was unable to
            # process", with err and description.
            self._errs[jti] = exc.as_json()
            return
        summary.received.append(record)
        # RFC 8936 §2.4.3: a duplicate is acknowledged again (its first ack may have been lost).
        self._acks.append(jti)
