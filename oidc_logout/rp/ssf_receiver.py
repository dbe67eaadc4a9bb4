"""Shared Signals receiver: act on validated SETs, and the framework-free push endpoint.

:class:`SSFReceiver` ends local sessions on CAEP ``session-revoked`` through the same
:class:`~oidc_logout.rp.sessions.SessionIndex` that back-channel logout uses (by ``sid`` when the
subject names a session, by ``sub`` for an ``iss_sub`` user), acknowledges SSF verification
events, follows stream-updated events, and hands credential-change and account-disabled to
callbacks the app registers. :meth:`SSFReceiver.handle_push` is the RFC 8935 HTTP layer for any
framework; :mod:`oidc_logout.rp.flask_ssf` mounts it in Flask and :mod:`oidc_logout.rp.ssf_poll`
feeds the same receiver from a poll endpoint (RFC 8936).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from .receiver import Readable, read_limited
from .sessions import SessionIndex
from .ssf import (
    ACCOUNT_DISABLED,
    CREDENTIAL_CHANGE,
    SESSION_REVOKED,
    STREAM_UPDATED,
    VERIFICATION,
    SecurityEvent,
    SETValidator,
)
from .ssf_errors import SETError, SETReplayed, SETUnavailableError
from .ssf_subject import SubjectId

__all__ = [
    "PUSH_CONTENT_TYPE",
    "Outcome",
    "ReceivedEvent",
    "SSFReceiver",
    "StreamState",
]

log = logging.getLogger(__name__)

#: RFC 8935 §2.1: the SET is the body, ``Content-Type: application/secevent+jwt``.
PUSH_CONTENT_TYPE = "application/secevent+jwt"
#: Largest push body accepted (bytes); the validator's own cap is the same.
MAX_PUSH_BYTES = 16 * 1024

#: What a received SET did.
Outcome = Literal["processed", "duplicate", "ignored", "discarded"]

#: Members of a Complex Subject this receiver acts on (SSF 1.0 §3.6 critical members).
UNDERSTOOD_MEMBERS = frozenset({"user", "session"})


@dataclass(frozen=True)
class ReceivedEvent:
    """A record of one received SET: no token, no subject values (safe to show and log)."""

    jti: str
    event_type: str
    #: The subject's shape, e.g. ``complex(session,user)`` (formats only).
    subject: str
    txn: str | None
    received_at: float
    outcome: Outcome
    #: Local session ids this SET ended.
    ended: frozenset[str] = frozenset()
    note: str = ""


@dataclass
class StreamState:
    """What the transmitter told this receiver about its stream (SSF 1.0 §8.1.4, §8.1.5)."""

    stream_id: str | None = None
    #: Epoch seconds of the last verification event received (None: never verified).
    verified_at: float | None = None
    #: The ``state`` of the last verification event (None for a transmitter-initiated one).
    verified_state: str | None = None
    #: ``enabled``/``paused``/``disabled`` from the last stream-updated event, if any.
    status: str | None = None
    status_reason: str | None = None
    #: ``state`` values of verification requests still awaiting their event.
    pending_states: set[str] = field(default_factory=set)


#: ``callback(event, receiver)`` for credential-change / account-disabled / other events;
#: return the local session ids it ended (or None).
EventCallback = Callable[[SecurityEvent, "SSFReceiver"], Iterable[str] | None]


class SSFReceiver:
    """Ties a :class:`SETValidator`, the session index and the app's callbacks together.

    :param validator: validates SETs (and claims their jti in the replay store).
    :param sessions: the RP's session index, the one back-channel logout uses.
    :param end_local_session: destroys one local session server-side (idempotent), e.g. the
        session store's ``delete``.
    :param index_issuer: the issuer the index was filled with (``register(iss, ...)``); default
        the transmitter's issuer (the OP is the transmitter).
    :param trusted_subject_issuers: ``iss`` values of ``iss_sub`` subjects this receiver acts on;
        default ``{index_issuer}``: a transmitter cannot end sessions another OP established.
    :param stream_id: this receiver's stream; stream events for another stream are refused.
    :param critical_subject_members: from the Transmitter Configuration Metadata (SSF 1.0 §7.1);
        an event whose complex subject has a critical member this receiver cannot process is
        discarded (SSF 1.0 §3.6), i.e. acknowledged without acting.
    :param resolve_email: maps an ``email`` subject (which the CAEP Interoperability Profile §2.5
        requires receivers to accept) to the ``sub`` values it is known under; default: none.
    :param on_credential_change: CAEP credential-change callback; default: record only.
    :param on_account_disabled: RISC account-disabled callback; default: end every session of
        the subject's user.
    :param on_event: called for any other event type (acknowledged and recorded either way).
    :param push_authorization: the exact ``Authorization`` header value the transmitter must send
        with each push (the stream's ``delivery.authorization_header``, SSF 1.0 §6.1.1); None:
        no check (then authenticate pushes some other way, e.g. mutual TLS).
    :param history_size: how many :class:`ReceivedEvent` records :attr:`history` keeps.
    """

    def __init__(
        self,
        validator: SETValidator,
        sessions: SessionIndex,
        end_local_session: Callable[[str], None],
        *,
        index_issuer: str | None = None,
        trusted_subject_issuers: Iterable[str] | None = None,
        stream_id: str | None = None,
        critical_subject_members: Iterable[str] = (),
        resolve_email: Callable[[str], Iterable[str]] | None = None,
        on_credential_change: EventCallback | None = None,
        on_account_disabled: EventCallback | None = None,
        on_event: EventCallback | None = None,
        push_authorization: str | None = None,
        history_size: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.validator = validator
        self.sessions = sessions
        self.end_local_session = end_local_session
        self.index_issuer = index_issuer or validator.issuer
        self.trusted_subject_issuers = frozenset(trusted_subject_issuers or (self.index_issuer,))
        self.critical_subject_members = frozenset(critical_subject_members)
        self.resolve_email = resolve_email
        self.on_credential_change = on_credential_change
        self.on_account_disabled = on_account_disabled
        self.on_event = on_event
        self.push_authorization = push_authorization
        self.clock = clock
        self.stream = StreamState(stream_id=stream_id)
        self._lock = threading.Lock()
        self._history: deque[ReceivedEvent] = deque(maxlen=history_size)

    # -- what happened ----------------------------------------------------------------

    @property
    def history(self) -> list[ReceivedEvent]:
        """The most recent received SETs, newest last (a copy)."""
        with self._lock:
            return list(self._history)

    def expect_verification(self, state: str) -> None:
        """Remember ``state`` of a verification request this receiver is about to make
        (SSF 1.0 §8.1.4.2), so the event carrying it is recognised."""
        with self._lock:
            self.stream.pending_states.add(state)

    def set_stream(self, stream_id: str | None) -> None:
        """Bind the receiver to its stream (after creating or reading it)."""
        with self._lock:
            self.stream.stream_id = stream_id

    # -- receiving ----------------------------------------------------------------------

    def receive(self, token: str | bytes) -> ReceivedEvent:
        """Validate ``token``, act on its event, record and return what happened.

        Raises :class:`SETError` for a SET to reject (RFC 8935 §2.4) and
        :class:`SETUnavailableError` when this receiver's own storage failed (the transmitter
        should retry). A duplicate (its jti was already received) is acknowledged without
        acting again: outcome ``duplicate``.
        """
        try:
            event = self.validator.validate(token)
        except SETReplayed as dup:
            prior = dup.event
            record = ReceivedEvent(
                jti=prior.jti if prior is not None else "",
                event_type=prior.event_type if prior is not None else "",
                subject=prior.subject.describe() if prior is not None else "",
                txn=prior.txn if prior is not None else None,
                received_at=self.clock(),
                outcome="duplicate",
                note="already received; not processed again",
            )
            self._record(record)
            return record
        try:
            record = self._process(event)
        except SETError:
            self.validator.release(event)
            raise
        except Exception as exc:  # the RP's own storage: not the transmitter's fault
            self.validator.release(event)
            log.error("SET processing failed: %s", type(exc).__name__)
            raise SETUnavailableError("processing_failed", "the event could not be processed") from None
        self._record(record)
        log.info(
            "SET %s (%s): %s, %d local session(s) ended",
            event.event_type.rsplit("/", 1)[-1],
            record.subject,
            record.outcome,
            len(record.ended),
        )
        return record

    def _record(self, record: ReceivedEvent) -> None:
        with self._lock:
            self._history.append(record)

    def _process(self, event: SecurityEvent) -> ReceivedEvent:
        def done(outcome: Outcome, ended: Iterable[str] = (), note: str = "") -> ReceivedEvent:
            return ReceivedEvent(
                jti=event.jti,
                event_type=event.event_type,
                subject=event.subject.describe(),
                txn=event.txn,
                received_at=self.clock(),
                outcome=outcome,
                ended=frozenset(ended),
                note=note,
            )

        if event.event_type == VERIFICATION:
            self._verification(event)
            return done("processed", note="stream verified")
        if event.event_type == STREAM_UPDATED:
            self._stream_updated(event)
            return done("processed", note=f"stream {event.event['status']}")
        # SSF 1.0 §3.6: "An SSF Receiver MUST discard any event that contains a Subject with a
        # Critical member that it is unable to process."
        unknown = set(event.subject.parts) & (self.critical_subject_members - UNDERSTOOD_MEMBERS)
        if unknown:
            return done(
                "discarded", note="critical subject member not understood: " + ",".join(sorted(unknown))
            )
        if event.event_type == SESSION_REVOKED:
            # CAEP 1.0 §3.1: "Session Revoked signals that the session identified by the subject
            # has been revoked" — a session subject ends that session (as a back-channel logout
            # token with sid does); a user subject ends all of that user's sessions here.
            return done("processed", self.end_sessions(self.local_sessions_for(event.subject)))
        if event.event_type == ACCOUNT_DISABLED:
            if self.on_account_disabled is not None:
                return done("processed", self.on_account_disabled(event, self) or ())
            # Default: a disabled account keeps no session here (RISC 1.0 §2.3).
            return done("processed", self.end_sessions(self.user_sessions(event.subject)))
        if event.event_type == CREDENTIAL_CHANGE:
            if self.on_credential_change is not None:
                return done("processed", self.on_credential_change(event, self) or ())
            return done("processed", note="recorded; no credential-change callback registered")
        if self.on_event is not None:
            return done("processed", self.on_event(event, self) or ())
        # RFC 8935 §2: acknowledgement reports parsing/validation only, so an event type this
        # receiver does not act on is still accepted.
        return done("ignored", note="event type not handled")

    def _check_stream(self, event: SecurityEvent) -> None:
        stream_id = event.subject.opaque_id
        if self.stream.stream_id is not None and stream_id != self.stream.stream_id:
            # SSF 1.0 §8.1.4.1 / §8.1.5: "The id of the value MUST be the stream_id of the stream".
            raise SETError("invalid_request", "stream_id_mismatch", "the event is about another stream")

    def _verification(self, event: SecurityEvent) -> None:
        self._check_stream(event)
        state = event.event.get("state")
        with self._lock:
            if state is not None:
                # SSF 1.0 §8.1.4.1: "the Event Receiver SHALL confirm that the value for state is
                # as expected. If the value of state does not match, an error response with the
                # err field set to invalid_state SHOULD be returned".
                if state not in self.stream.pending_states:
                    raise SETError(
                        "invalid_state", "state_unexpected", "verification state does not match a request"
                    )
                self.stream.pending_states.discard(state)
            self.stream.verified_at = self.clock()
            self.stream.verified_state = state

    def _stream_updated(self, event: SecurityEvent) -> None:
        self._check_stream(event)
        with self._lock:
            self.stream.status = str(event.event["status"])
            reason = event.event.get("reason")
            self.stream.status_reason = reason if isinstance(reason, str) else None

    # -- subjects → local sessions ------------------------------------------------------

    def local_sessions_for(self, subject: SubjectId) -> set[str]:
        """Local sessions a session-revoked subject names: the session's when the subject
        names one (opaque session id, or a complex subject's ``session`` member), else every
        session of the subject's user."""
        if subject.format == "complex":
            session = subject.parts.get("session")
            if session is not None:
                return self._by_sid(session)
            user = subject.parts.get("user")
            return self.user_sessions(user) if user is not None else set()
        if subject.format == "opaque":
            # CAEP 1.0 §3.1 example 1: a simple opaque subject is the session identifier.
            return self._by_sid(subject)
        return self.user_sessions(subject)

    def _by_sid(self, session: SubjectId) -> set[str]:
        sid = session.opaque_id
        return self.sessions.local_sessions_for(self.index_issuer, sid=sid) if sid else set()

    def user_sessions(self, subject: SubjectId) -> set[str]:
        """Every local session of the user ``subject`` names (``iss_sub`` from a trusted issuer,
        ``email`` through ``resolve_email``, any alternative of ``aliases``, a complex
        subject's ``user``)."""
        if subject.format == "complex":
            user = subject.parts.get("user")
            return self.user_sessions(user) if user is not None else set()
        found: set[str] = set()
        for candidate in subject.candidates():
            pair = candidate.iss_sub
            if pair is not None and pair[0] in self.trusted_subject_issuers:
                found |= self.sessions.local_sessions_for(pair[0], sub=pair[1])
            email = candidate.email
            if email is not None and self.resolve_email is not None:
                for sub in self.resolve_email(email):
                    found |= self.sessions.local_sessions_for(self.index_issuer, sub=sub)
        return found

    def end_sessions(self, local_ids: Iterable[str]) -> set[str]:
        """End each local session and drop it from the index; return the ids ended."""
        ended: set[str] = set()
        for local_id in sorted(local_ids):
            self.end_local_session(local_id)
            self.sessions.forget(local_id)
            ended.add(local_id)
        return ended

    # -- RFC 8935 push endpoint ---------------------------------------------------------

    def handle_push(
        self,
        body: bytes | Readable,
        content_type: str | None,
        authorization_header: str | None,
        *,
        content_length: int | str | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Process one RFC 8935 push request; return (status, headers, body).

        * 401 ``authentication_failed`` without an ``Authorization`` header, 403 ``access_denied``
          with a wrong one (when :attr:`push_authorization` is configured; SSF 1.0 §6.1.1);
        * 400 with ``{"err", "description"}`` (RFC 8935 §2.4) for a body that is not a valid SET;
        * 202 Accepted with an empty body (RFC 8935 §2.3) for a valid SET, a duplicate included;
        * 503 when this receiver's own storage or the transmitter's JWKS is unreachable, so the
          transmitter retries.

        ``body`` may be a stream (``wsgi.input``) read with a 16 KiB cap, given ``content_length``.
        """
        expected = self.push_authorization
        if expected is not None:
            if not authorization_header:
                return _push_error(
                    SETError(
                        "authentication_failed",
                        "authorization_missing",
                        "an Authorization header is required",
                    ),
                    status=401,
                    extra=[("WWW-Authenticate", _challenge(expected))],
                )
            if not hmac.compare_digest(authorization_header.encode(), expected.encode()):
                return _push_error(
                    SETError(
                        "access_denied", "authorization_mismatch", "the Authorization header is not accepted"
                    ),
                    status=403,
                )
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        if mime != PUSH_CONTENT_TYPE:
            # RFC 8935 §2.1: the SET is sent as application/secevent+jwt.
            return _push_error(
                SETError("invalid_request", "bad_content_type", "expected application/secevent+jwt")
            )
        if not isinstance(body, bytes):
            read = read_limited(body, content_length, MAX_PUSH_BYTES)
            if read is None:
                return _push_error(
                    SETError("invalid_request", "too_large", "request body exceeds the size limit")
                )
            body = read
        if len(body) > MAX_PUSH_BYTES:
            return _push_error(
                SETError("invalid_request", "too_large", "request body exceeds the size limit")
            )
        try:
            self.receive(body)
        except SETError as exc:
            return _push_error(exc, status=exc.status)
        except Exception as exc:
            log.error("SET push failed: %s", type(exc).__name__)
            return _push_error(
                SETUnavailableError("server_error", "the SET could not be processed"), status=503
            )
        # RFC 8935 §2.3: "the SET Recipient SHALL acknowledge successful transmission by
        # responding with HTTP Response Status Code 202 (Accepted)".
        return 202, list(_NO_STORE), b""


_NO_STORE = [("Cache-Control", "no-store")]


def _challenge(expected: str) -> str:
    scheme = expected.split(" ", 1)[0] if " " in expected else "Bearer"
    return f'{scheme} realm="ssf-push"'


def _push_error(
    exc: SETError, status: int = 400, extra: list[tuple[str, str]] | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    # RFC 8935 §2.4: "The Content-Type header of this response MUST be application/json, and
    # the body MUST be a UTF-8 encoded JSON object containing ... err ... description".
    payload = exc.as_json()
    if status >= 500:
        # Not a rejection of the SET (no RFC 8935 code applies): the transmitter should retry.
        payload["err"] = "temporarily_unavailable"
    body = json.dumps(payload).encode()
    return status, [("Content-Type", "application/json"), *_NO_STORE, *(extra or [])], body
