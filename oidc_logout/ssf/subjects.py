"""Subject identifiers (RFC 9493) as SSF uses them (SSF §3).

Validation of identifiers a receiver or a Global Token Revocation caller sends, the identifier
this transmitter puts in an event's ``sub_id``, and the subject matching rules of SSF §8.1.3.1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidRequest

__all__ = [
    "FORMATS",
    "STREAM_FORMATS",
    "EmailLookup",
    "event_subject",
    "matches",
    "register_email_lookup",
    "subject_key",
    "validate",
]

#: RFC 9493 §3.2 formats and their members (``format`` besides); SSF §3.3 ``complex``.
FORMATS: dict[str, tuple[str, ...]] = {
    "account": ("uri",),
    "email": ("email",),
    "iss_sub": ("iss", "sub"),
    "opaque": ("id",),
    "phone_number": ("phone_number",),
    "did": ("url",),
    "uri": ("uri",),
    "aliases": ("identifiers",),
}
#: The formats a stream's events can use (``subject_format``): the CAEP Interoperability
#: Profile §2.5 formats, plus a complex subject naming the session (CAEP §3.1 example).
STREAM_FORMATS = ("iss_sub", "email", "opaque", "complex")

#: Longest identifier member accepted (RFC 9493 sets none; stored and compared, so bounded).
MAX_MEMBER = 1024

EmailLookup = Callable[[str], "str | None"]
_email_lookup: list[EmailLookup] = []


def register_email_lookup(lookup: EmailLookup | None) -> None:
    """Where the ``email`` format finds a subject's address (the host's user directory).
    Without one (a delivery worker, an OP without a directory) events fall back to
    ``iss_sub``: a subject is never sent under an identifier the OP cannot vouch for."""
    _email_lookup[:] = [lookup] if lookup is not None else []


def _email_of(sub: str) -> str | None:
    if not _email_lookup:
        return None
    try:
        email = _email_lookup[0](sub)
    except Exception:  # a failing directory must not fail a logout
        return None
    return email if isinstance(email, str) and "@" in email else None


def validate(value: Any, *, what: str = "subject", allow_complex: bool = True) -> dict[str, Any]:
    """An RFC 9493 subject identifier (or SSF §3.3 complex subject) as a plain dict; raises
    :class:`InvalidRequest` naming the problem."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"'{what}' must be a JSON object (RFC 9493 subject identifier)")
    fmt = value.get("format")
    if not isinstance(fmt, str):
        raise InvalidRequest(f"'{what}' needs a 'format' (RFC 9493 §3)")
    if fmt == "complex":
        if not allow_complex:
            raise InvalidRequest(f"'{what}': a complex subject is not accepted here")
        members = {k: v for k, v in value.items() if k != "format"}
        if not members:
            raise InvalidRequest(f"'{what}': a complex subject needs at least one member (SSF §3.3)")
        return {
            "format": "complex",
            **{k: validate(v, what=f"{what}.{k}", allow_complex=False) for k, v in members.items()},
        }
    required = FORMATS.get(fmt)
    if required is None:
        raise InvalidRequest(f"'{what}': unsupported subject identifier format {fmt[:40]!r}")
    out: dict[str, Any] = {"format": fmt}
    for member in required:
        v = value.get(member)
        if fmt == "aliases":
            if not isinstance(v, list) or not v:
                raise InvalidRequest(f"'{what}': 'identifiers' must be a non-empty array (RFC 9493 §3.2.8)")
            out[member] = [validate(i, what=f"{what}.identifiers", allow_complex=False) for i in v]
            continue
        if not isinstance(v, str) or not v or len(v) > MAX_MEMBER:
            raise InvalidRequest(
                f"'{what}': format {fmt} requires a non-empty string '{member}' (RFC 9493 §3.2)"
            )
        out[member] = v
    if fmt == "email" and "@" not in out["email"]:
        raise InvalidRequest(f"'{what}': not an email address")
    return out


def subject_key(subject: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a (validated) subject: equal subjects, equal keys."""
    canon = json.dumps(subject, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def event_subject(fmt: str, issuer: str, sub: str, sid: str | None = None) -> dict[str, Any]:
    """The ``sub_id`` of an event about user ``sub`` (and OP session ``sid``) in ``fmt``.

    * ``iss_sub`` (RFC 9493 §3.2.3): this OP as ``iss``, the End-User's ``sub``;
    * ``email`` (§3.2.2): the directory's address, else ``iss_sub``;
    * ``opaque`` (§3.2.4): the session id for a session event, else the ``sub``;
    * ``complex`` (SSF §3.3): ``user`` as ``iss_sub`` and ``session`` as ``opaque`` sid.
    """
    user: dict[str, Any] = {"format": "iss_sub", "iss": issuer, "sub": sub}
    if fmt == "email":
        email = _email_of(sub)
        return {"format": "email", "email": email} if email else user
    if fmt == "opaque":
        return {"format": "opaque", "id": sid or sub}
    if fmt == "complex":
        out: dict[str, Any] = {"format": "complex", "user": user}
        if sid:
            out["session"] = {"format": "opaque", "id": sid}
        return out
    return user


def _simple_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return subject_key(a) == subject_key(b)


def matches(stored: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """SSF §8.1.3.1: simple subjects match if identical; complex subjects match if for every
    member at least one side leaves it undefined or both are identical. A simple subject is
    compared with a complex one as the complex subject's members (a receiver that removed
    ``alice@example.com`` hears nothing of a complex subject whose ``user`` is her)."""
    s_complex = stored.get("format") == "complex"
    e_complex = event.get("format") == "complex"
    if not s_complex and not e_complex:
        return _simple_equal(stored, event)
    if s_complex and e_complex:
        for name in (set(stored) | set(event)) - {"format"}:
            if name in stored and name in event and not _simple_equal(stored[name], event[name]):
                return False
        return True
    simple, complex_ = (stored, event) if e_complex else (event, stored)
    return any(
        _simple_equal(simple, v) for k, v in complex_.items() if k != "format" and isinstance(v, Mapping)
    )
