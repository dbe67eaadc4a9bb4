"""Stream management (SSF 1.0 §8.1): configuration (create, read, update, replace, delete),
status, subjects and verification - for the OAuth client that owns the stream only.

Framework-free: each operation takes a Session (never commits), the settings, the
authenticated client's id and the request's JSON, and returns what the endpoint answers.
A stream of another client is "no Event Stream with the given stream_id for this Event
Receiver" (404), never a hint that it exists (SSF §8: the authorization "MUST associate a
Receiver with one or more stream IDs").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .._http import DisallowedAddress, check_uri_address
from ..config import Settings
from ..errors import InvalidRequest, NotFound
from ..storage.base import utcnow
from ..storage.models import Delivery, SSFEvent, SSFStream, SSFSubject
from ..tokens import new_id
from ..vocabulary import Channel, DeliveryState
from . import EVENTS_SUPPORTED, POLL, PUSH
from . import events as ssf_events
from .errors import Conflict, TooFrequent
from .subjects import STREAM_FORMATS, subject_key, validate

__all__ = [
    "STATUSES",
    "add_subject",
    "create_stream",
    "delete_stream",
    "get_status",
    "list_streams",
    "owned_stream",
    "read_stream",
    "remove_subject",
    "replace_stream",
    "reserved_scopes",
    "set_status",
    "stream_config",
    "update_stream",
    "verify",
]

#: SSF §8.1.2 status values.
STATUSES = ("enabled", "paused", "disabled")
#: Receiver-Supplied members (SSF §8.1.1), plus this transmitter's ``subject_format`` extension.
RECEIVER_MEMBERS = ("events_requested", "delivery", "description", "subject_format")
MAX_EVENTS_REQUESTED = 50

PollURL = Callable[[str], str]


def _body(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return value


def owned_stream(db: Session, client_id: str, stream_id: Any, *, lock: bool = False) -> SSFStream:
    """The stream ``stream_id`` of ``client_id``; 404 if absent or another client's."""
    if not isinstance(stream_id, str) or not stream_id or len(stream_id) > 40:
        raise InvalidRequest("'stream_id' is required")
    stream = db.get(SSFStream, stream_id, with_for_update=lock)
    if stream is None or stream.client_id != client_id:
        raise NotFound("no Event Stream with that stream_id for this receiver")
    return stream


def stream_config(stream: SSFStream, settings: Settings, poll_url: PollURL) -> dict[str, Any]:
    """The stream configuration object (SSF §8.1.1)."""
    delivery: dict[str, Any] = {"method": stream.delivery_method}
    if stream.delivery_method == POLL:
        # SSF §6.1.2: the poll endpoint_url is supplied by the transmitter, unique per stream.
        delivery["endpoint_url"] = poll_url(stream.stream_id)
    else:
        delivery["endpoint_url"] = stream.endpoint_url
        if stream.authorization_header:
            delivery["authorization_header"] = stream.authorization_header
    requested = list(stream.events_requested or [])
    out: dict[str, Any] = {
        "stream_id": stream.stream_id,
        "iss": stream.iss,
        "aud": stream.aud,
        "delivery": delivery,
        "events_supported": list(EVENTS_SUPPORTED),
        "events_requested": requested,
        # §8.1.1: "a subset (not necessarily a proper subset) of the intersection of
        # events_supported and events_requested".
        "events_delivered": [e for e in EVENTS_SUPPORTED if e in requested],
        "min_verification_interval": settings.ssf_min_verification_interval,
        "subject_format": stream.subject_format,
    }
    if stream.description is not None:
        out["description"] = stream.description
    return out


def _events_requested(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 255 for v in value):
        raise InvalidRequest("'events_requested' must be an array of event type URIs")
    if len(value) > MAX_EVENTS_REQUESTED:
        raise InvalidRequest(f"'events_requested' takes at most {MAX_EVENTS_REQUESTED} values")
    return list(dict.fromkeys(value))


def _delivery(value: Any, settings: Settings) -> tuple[str, str | None, str | None]:
    """(method, endpoint_url, authorization_header) of a Receiver-Supplied ``delivery``."""
    if value is None:
        # §8.1.1.1: "If the request does not contain the delivery property, then the
        # Transmitter MUST assume that the method is urn:ietf:rfc:8936 (poll)."
        return POLL, None, None
    if not isinstance(value, dict):
        raise InvalidRequest("'delivery' must be a JSON object")
    method = value.get("method", POLL)
    if method == POLL:
        return POLL, None, None  # §6.1.2: the poll URL is the transmitter's
    if method != PUSH:
        raise InvalidRequest(f"unsupported delivery method; use {PUSH} or {POLL}")
    url = value.get("endpoint_url")
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise InvalidRequest("push delivery needs an 'endpoint_url'")
    if not url.startswith("https://") and not (settings.dev_mode and url.startswith("http://")):
        # SSF §6.1.1 / CAEP Interop §2.1: TLS to the receiver.
        raise InvalidRequest("'endpoint_url' must use https")
    try:
        # RFC 9700 §4.16 (SSRF): the address policy of every outbound POST, checked up front.
        check_uri_address(url, dev_mode=settings.dev_mode, allowlist=settings.address_allowlist)
    except DisallowedAddress as exc:
        raise InvalidRequest(f"'endpoint_url' is not allowed: {exc.description}") from None
    auth = value.get("authorization_header")
    if auth is not None and (
        not isinstance(auth, str)
        or not auth
        or len(auth) > 2048
        or not auth.isascii()
        or not auth.isprintable()
    ):
        raise InvalidRequest("'authorization_header' must be a printable ASCII string")
    return PUSH, url, auth


def _description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("'description' must be a string")
    return value[:1024]  # §8.1.1: "The transmitter MAY truncate the string"


def _subject_format(value: Any, settings: Settings) -> str:
    fmt = settings.ssf_default_subject_format if value is None else value
    if fmt not in STREAM_FORMATS:
        raise InvalidRequest(f"'subject_format' must be one of {', '.join(STREAM_FORMATS)}")
    return str(fmt)


def create_stream(
    db: Session,
    settings: Settings,
    client_id: str,
    body: Any,
    poll_url: PollURL,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """SSF §8.1.1.1: a new stream of ``client_id`` (201 with its configuration)."""
    body = _body(body)
    now = now or utcnow()
    method, url, auth = _delivery(body.get("delivery"), settings)
    requested = _events_requested(body["events_requested"]) if "events_requested" in body else []
    description = _description(body.get("description"))
    fmt = _subject_format(body.get("subject_format"), settings)
    owned = db.scalar(select(func.count()).select_from(SSFStream).where(SSFStream.client_id == client_id))
    if int(owned or 0) >= settings.ssf_max_streams_per_client:
        # §8.1.1.1: "If the Transmitter does not allow multiple streams with the same
        # Receiver, it MUST respond with HTTP status code 409 Conflict" - beyond our limit.
        raise Conflict(f"this receiver already has {owned} streams (the limit)")
    stream = SSFStream(
        stream_id=new_id(16),
        client_id=client_id,
        iss=settings.issuer,
        aud=client_id,
        delivery_method=method,
        endpoint_url=url,
        authorization_header=auth,
        events_requested=requested,
        description=description,
        subject_format=fmt,
        status="enabled",
        created_at=now,
        updated_at=now,
    )
    db.add(stream)
    db.flush()
    return stream_config(stream, settings, poll_url)


def list_streams(db: Session, settings: Settings, client_id: str, poll_url: PollURL) -> list[dict[str, Any]]:
    """§8.1.1.2 without ``stream_id``: every stream of this receiver (an empty list if none)."""
    rows = db.scalars(
        select(SSFStream).where(SSFStream.client_id == client_id).order_by(SSFStream.created_at)
    )
    return [stream_config(s, settings, poll_url) for s in rows]


def read_stream(
    db: Session, settings: Settings, client_id: str, stream_id: Any, poll_url: PollURL
) -> dict[str, Any]:
    return stream_config(owned_stream(db, client_id, stream_id), settings, poll_url)


def _check_transmitter_members(
    stream: SSFStream, body: Mapping[str, Any], settings: Settings, poll_url: PollURL
) -> None:
    """§8.1.1.3: "Transmitter-Supplied properties besides the stream_id MAY be present, but
    they MUST match the expected value" (the current one, before any update)."""
    current = stream_config(stream, settings, poll_url)
    for member in ("iss", "aud", "events_supported", "events_delivered", "min_verification_interval"):
        if member in body and body[member] != current[member]:
            raise InvalidRequest(f"'{member}' is Transmitter-Supplied and does not match")


def _apply(stream: SSFStream, body: Mapping[str, Any], settings: Settings, *, replace: bool) -> None:
    if "delivery" in body or replace:
        method, url, auth = _delivery(body.get("delivery"), settings)
        if method != stream.delivery_method:
            raise InvalidRequest("the delivery method of a stream cannot change; create a new stream")
        stream.endpoint_url, stream.authorization_header = url, auth
    if "events_requested" in body:
        stream.events_requested = _events_requested(body["events_requested"])
    elif replace:
        stream.events_requested = []  # §8.1.1.4: missing Receiver-Supplied = deleted
    if "description" in body or replace:
        stream.description = _description(body.get("description"))
    if "subject_format" in body or replace:
        stream.subject_format = _subject_format(body.get("subject_format"), settings)


def update_stream(
    db: Session, settings: Settings, client_id: str, body: Any, poll_url: PollURL
) -> dict[str, Any]:
    """§8.1.1.3 PATCH: members present are updated, missing ones unchanged."""
    body = _body(body)
    stream = owned_stream(db, client_id, body.get("stream_id"), lock=True)
    _check_transmitter_members(stream, body, settings, poll_url)
    _apply(stream, body, settings, replace=False)
    stream.updated_at = utcnow()
    db.flush()
    return stream_config(stream, settings, poll_url)


def replace_stream(
    db: Session, settings: Settings, client_id: str, body: Any, poll_url: PollURL
) -> dict[str, Any]:
    """§8.1.1.4 PUT: the full set of Receiver-Supplied members; missing ones are deleted."""
    body = _body(body)
    stream = owned_stream(db, client_id, body.get("stream_id"), lock=True)
    _check_transmitter_members(stream, body, settings, poll_url)
    _apply(stream, body, settings, replace=True)
    stream.updated_at = utcnow()
    db.flush()
    return stream_config(stream, settings, poll_url)


def _fail_pending_pushes(db: Session, stream_id: str, why: str, now: dt.datetime) -> None:
    """Outbox rows of this stream's SETs not yet delivered: failed (they must not be sent)."""
    ids = select(SSFEvent.id).where(SSFEvent.stream_id == stream_id).scalar_subquery()
    db.execute(
        update(Delivery)
        .where(
            Delivery.channel == Channel.SSF_PUSH,
            Delivery.sid.in_(ids),
            Delivery.state == DeliveryState.PENDING,
        )
        .values(state=DeliveryState.FAILED, last_error=why, completed_at=now)
        .execution_options(synchronize_session=False)
    )


def delete_stream(db: Session, client_id: str, stream_id: Any) -> None:
    """§8.1.1.5: the stream, its subjects and its undelivered SETs are gone (204)."""
    stream = owned_stream(db, client_id, stream_id, lock=True)
    _fail_pending_pushes(db, stream.stream_id, "stream deleted", utcnow())
    db.execute(delete(SSFSubject).where(SSFSubject.stream_id == stream.stream_id))
    db.execute(delete(SSFEvent).where(SSFEvent.stream_id == stream.stream_id))
    db.delete(stream)
    db.flush()


def get_status(db: Session, client_id: str, stream_id: Any) -> dict[str, Any]:
    """§8.1.2.1: ``{stream_id, status, reason?}``."""
    stream = owned_stream(db, client_id, stream_id)
    out: dict[str, Any] = {"stream_id": stream.stream_id, "status": stream.status}
    if stream.status_reason:
        out["reason"] = stream.status_reason
    return out


def set_status(db: Session, client_id: str, body: Any, now: dt.datetime | None = None) -> dict[str, Any]:
    """§8.1.2.2: the receiver changes the status. ``enabled`` releases held events in order;
    ``disabled`` drops what was held or queued ("will not hold any events")."""
    body = _body(body)
    now = now or utcnow()
    status = body.get("status")
    if status not in STATUSES:
        raise InvalidRequest(f"'status' must be one of {', '.join(STATUSES)}")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidRequest("'reason' must be a string")
    stream = owned_stream(db, client_id, body.get("stream_id"), lock=True)
    previous = stream.status
    stream.status = status
    stream.status_reason = reason[:500] if reason else None
    stream.updated_at = now
    db.flush()
    if status == "enabled" and previous == "paused":
        ssf_events.release_held(db, stream, now)
    elif status == "disabled":
        _fail_pending_pushes(db, stream.stream_id, "stream disabled", now)
        db.execute(
            delete(SSFEvent).where(
                SSFEvent.stream_id == stream.stream_id,
                SSFEvent.state.in_((ssf_events.HELD, ssf_events.QUEUED)),
            )
        )
    db.flush()
    out: dict[str, Any] = {"stream_id": stream.stream_id, "status": stream.status}
    if stream.status_reason:
        out["reason"] = stream.status_reason
    return out


def _subject_request(db: Session, client_id: str, body: Any) -> tuple[SSFStream, dict[str, Any]]:
    body = _body(body)
    stream = owned_stream(db, client_id, body.get("stream_id"))
    if "subject" not in body:
        raise InvalidRequest("'subject' is required")
    return stream, validate(body["subject"])


def _upsert_subject(
    db: Session, stream: SSFStream, subject: dict[str, Any], action: str, verified: bool
) -> None:
    key = subject_key(subject)
    row = db.scalar(
        select(SSFSubject).where(SSFSubject.stream_id == stream.stream_id, SSFSubject.subject_key == key)
    )
    if row is None:
        db.add(
            SSFSubject(
                stream_id=stream.stream_id,
                subject_key=key,
                subject=subject,
                action=action,
                verified=verified,
                created_at=utcnow(),
            )
        )
    else:
        row.action, row.verified = action, verified
    db.flush()


def add_subject(db: Session, client_id: str, body: Any) -> None:
    """§8.1.3.2: events about ``subject`` are sent on the stream (again). With
    ``default_subjects`` ALL every subject already is; adding undoes a removal."""
    stream, subject = _subject_request(db, client_id, body)
    verified = _body(body).get("verified", True)
    if not isinstance(verified, bool):
        raise InvalidRequest("'verified' must be a boolean")
    _upsert_subject(db, stream, subject, "added", verified)


def remove_subject(db: Session, client_id: str, body: Any) -> None:
    """§8.1.3.3: no more events about ``subject`` on the stream (matching per §8.1.3.1)."""
    stream, subject = _subject_request(db, client_id, body)
    _upsert_subject(db, stream, subject, "removed", True)


def verify(db: Session, settings: Settings, client_id: str, body: Any, now: dt.datetime | None = None) -> str:
    """§8.1.4.2: record a verification event with the receiver's ``state``; returns its jti.
    More often than ``min_verification_interval`` is 429 (§8.1.1)."""
    body = _body(body)
    now = now or utcnow()
    state = body.get("state")
    if state is not None and (not isinstance(state, str) or len(state) > 1024):
        raise InvalidRequest("'state' must be a string of at most 1024 characters")
    stream = owned_stream(db, client_id, body.get("stream_id"), lock=True)
    last = stream.last_verification_at
    interval = settings.ssf_min_verification_interval
    if last is not None and interval > 0 and (now - last).total_seconds() < interval:
        wait = interval - (now - last).total_seconds()
        raise TooFrequent(f"at most one verification request per {interval} s", retry_after=int(wait) + 1)
    if stream.status == "disabled":
        raise InvalidRequest("the stream is disabled; enable it to verify it")
    stream.last_verification_at = now
    return ssf_events.record_verification(db, stream, state, now)


def reserved_scopes(settings: Settings) -> tuple[str, ...]:
    """Scopes dynamic registration never grants: a self-registered client must not subscribe
    to every user's security events nor revoke anyone's tokens."""
    return (settings.ssf_manage_scope, settings.ssf_read_scope, settings.gtr_scope)
