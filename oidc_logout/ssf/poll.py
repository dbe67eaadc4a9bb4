"""Poll-based SET delivery (RFC 8936): the transmitter's poll endpoint of one stream.

A poll request (§2.4) is a JSON object with ``maxEvents``, ``returnImmediately``, ``ack``
(jtis the receiver processed) and ``setErrs`` (jti -> ``{err, description}`` of SETs it could
not process). Acknowledgements are written first, in their own transaction (§2.4.2: an
acknowledged SET is not sent again); then up to ``maxEvents`` SETs are returned as ``{"sets":
{jti: SET}, "moreAvailable": bool}`` (§2.5). A SET returned but not acknowledged is returned
again after ``ssf_poll_redeliver_after`` seconds (the receiver may have lost the response).
With ``returnImmediately`` false and nothing to return, the request waits - bounded by
``ssf_poll_max_wait`` - for an event (long polling, §2.1), checking the database at short
intervals, then answers with an empty ``sets``.

A paused stream returns nothing (SSF §8.1.2: "MUST NOT transmit") while acknowledgements are
still taken; its events wait until it is enabled again.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..keys import KeyRing
from ..storage.base import utcnow
from ..storage.models import SSFEvent, SSFStream
from . import POLL
from .errors import PollError
from .events import ACKED, QUEUED, SENT
from .push import SET_ALG, sign_set
from .streams import owned_stream

__all__ = ["PollRequest", "parse_poll_request", "poll"]

#: How often a long poll looks for new events.
CHECK_INTERVAL = 0.2
MAX_ACKS = 1000
#: The ``error`` of a SET the receiver reported in ``setErrs``.
ERRORED = "error"


class PollRequest:
    """A validated RFC 8936 §2.4 poll request."""

    def __init__(
        self, max_events: int, return_immediately: bool, ack: list[str], set_errs: dict[str, str]
    ) -> None:
        self.max_events = max_events
        self.return_immediately = return_immediately
        self.ack = ack
        self.set_errs = set_errs


def parse_poll_request(body: Any, settings: Settings) -> PollRequest:
    """Validate the poll request body (absent members take the RFC's defaults)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise PollError("the poll request must be a JSON object (RFC 8936 §2.4)")
    max_events = body.get("maxEvents", settings.ssf_poll_max_events)
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
        raise PollError("'maxEvents' must be a non-negative integer")
    ret = body.get("returnImmediately", False)
    if not isinstance(ret, bool):
        raise PollError("'returnImmediately' must be a boolean")
    ack = body.get("ack", [])
    if not isinstance(ack, list) or not all(isinstance(j, str) and 0 < len(j) <= 40 for j in ack):
        raise PollError("'ack' must be an array of jti strings")
    errs_in = body.get("setErrs", {})
    if not isinstance(errs_in, dict):
        raise PollError("'setErrs' must be an object of jti -> {err, description}")
    set_errs: dict[str, str] = {}
    for jti, detail in errs_in.items():
        if not isinstance(detail, dict) or not isinstance(detail.get("err"), str) or len(jti) > 40:
            raise PollError("each 'setErrs' member needs an 'err' string (RFC 8936 §2.4.4)")
        desc = detail.get("description")
        text = detail["err"][:60] + (f": {desc[:300]}" if isinstance(desc, str) and desc else "")
        set_errs[jti] = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(ack) + len(set_errs) > MAX_ACKS:
        raise PollError(f"at most {MAX_ACKS} acknowledgements per request")
    return PollRequest(min(max_events, settings.ssf_poll_max_events), ret, list(dict.fromkeys(ack)), set_errs)


def _acknowledge(db: Session, stream_id: str, req: PollRequest, now: dt.datetime) -> None:
    # §2.4.2: "ack ... a list of jti values ... that have been successfully received".
    if req.ack:
        db.execute(
            update(SSFEvent)
            .where(
                SSFEvent.stream_id == stream_id, SSFEvent.id.in_(req.ack), SSFEvent.state.in_((QUEUED, SENT))
            )
            .values(state=ACKED, acked_at=now)
            .execution_options(synchronize_session=False)
        )
    for jti, error in req.set_errs.items():
        # §2.4.4: a SET the recipient reports as an error is acknowledged, with its error.
        db.execute(
            update(SSFEvent)
            .where(SSFEvent.stream_id == stream_id, SSFEvent.id == jti, SSFEvent.state.in_((QUEUED, SENT)))
            .values(state=ERRORED, acked_at=now, error=error)
            .execution_options(synchronize_session=False)
        )


def _take(
    db: Session, stream: SSFStream, n: int, settings: Settings, now: dt.datetime
) -> tuple[list[SSFEvent], bool]:
    """Up to ``n`` deliverable events, oldest first (marked sent), and whether more remain."""
    again = now - dt.timedelta(seconds=settings.ssf_poll_redeliver_after)
    due = or_(SSFEvent.state == QUEUED, (SSFEvent.state == SENT) & (SSFEvent.sent_at < again))
    rows = list(
        db.scalars(
            select(SSFEvent)
            .where(SSFEvent.stream_id == stream.stream_id, due)
            .order_by(SSFEvent.created_at, SSFEvent.id)
            .limit(n + 1)
            .with_for_update(skip_locked=True)
        )
    )
    more = len(rows) > n
    rows = rows[:n]
    for ev in rows:
        ev.state, ev.sent_at = SENT, now
    db.flush()
    return rows, more


def poll(
    session_factory: Callable[[], Session],
    keyring: KeyRing,
    settings: Settings,
    client_id: str,
    stream_id: str,
    body: Any,
    *,
    max_wait: float | None = None,
) -> dict[str, Any]:
    """Answer one poll request of ``client_id`` on ``stream_id`` (see the module docstring)."""
    req = parse_poll_request(body, settings)
    with session_factory() as db, db.begin():
        stream = owned_stream(db, client_id, stream_id)
        if stream.delivery_method != POLL:
            raise PollError("this stream uses push delivery; it has no poll endpoint")
        _acknowledge(db, stream.stream_id, req, utcnow())
    if req.max_events == 0:
        # §2.4: maxEvents 0 - acknowledge only, no SETs returned.
        with session_factory() as db:
            stream = owned_stream(db, client_id, stream_id)
            return {"sets": {}, "moreAvailable": _has_due(db, stream, settings)}
    wait = settings.ssf_poll_max_wait if max_wait is None else max_wait
    deadline = time.monotonic() + (0.0 if req.return_immediately else max(0.0, wait))
    while True:
        with session_factory() as db, db.begin():
            stream = owned_stream(db, client_id, stream_id)
            taken: list[SSFEvent] = []
            more = False
            if stream.status == "enabled":
                taken, more = _take(db, stream, req.max_events, settings, utcnow())
            claims = [(ev.id, dict(ev.claims)) for ev in taken]
        if claims or time.monotonic() >= deadline:
            break
        time.sleep(min(CHECK_INTERVAL, max(0.0, deadline - time.monotonic())))
    key = keyring.signing_key(SET_ALG) if claims else None
    sets = {jti: sign_set(c, key) for jti, c in claims} if key is not None else {}
    # §2.5: "sets" - a JSON object of jti -> SET; "moreAvailable" - more SETs are waiting.
    return {"sets": sets, "moreAvailable": more}


def _has_due(db: Session, stream: SSFStream, settings: Settings) -> bool:
    if stream.status != "enabled":
        return False
    again = utcnow() - dt.timedelta(seconds=settings.ssf_poll_redeliver_after)
    due = or_(SSFEvent.state == QUEUED, (SSFEvent.state == SENT) & (SSFEvent.sent_at < again))
    return (
        db.scalar(select(SSFEvent.id).where(SSFEvent.stream_id == stream.stream_id, due).limit(1)) is not None
    )
