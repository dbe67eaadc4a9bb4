"""Subject Identifiers for Security Event Tokens (RFC 9493) as SSF 1.0 §3 uses them.

:func:`parse_subject` turns a ``sub_id`` value into a :class:`SubjectId`, checking the members
each format requires. Formats this module does not know are kept as they are (SSF 1.0 §3.4
allows formats agreed between the parties), so a receiver can still acknowledge the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .ssf_errors import SETError

__all__ = ["COMPLEX_MEMBERS", "SubjectId", "parse_subject"]

#: SSF 1.0 §3.3: the member names a Complex Subject may use ("Additional Subject Member names
#: MAY be used" too, so others are accepted and kept).
COMPLEX_MEMBERS = ("user", "device", "session", "application", "tenant", "org_unit", "group")

#: format → the string members it MUST contain. RFC 9493 §3.2.1 account (uri), §3.2.3 did (url),
#: §3.2.4 email (email), §3.2.5 iss_sub (iss, sub), §3.2.6 opaque (id), §3.2.7 phone_number
#: (phone_number), §3.2.8 uri (uri); SSF 1.0 §3.5.1 jwt_id (iss, jti), §3.5.2 saml_assertion_id
#: (issuer, assertion_id).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "account": ("uri",),
    "did": ("url",),
    "email": ("email",),
    "iss_sub": ("iss", "sub"),
    "opaque": ("id",),
    "phone_number": ("phone_number",),
    "uri": ("uri",),
    "jwt_id": ("iss", "jti"),
    "saml_assertion_id": ("issuer", "assertion_id"),
}

_MAX_DEPTH = 3


@dataclass(frozen=True)
class SubjectId:
    """One parsed Subject Identifier (or a Complex Subject, SSF 1.0 §3.3).

    ``members`` holds the identifier's members without ``format``; a complex subject has its
    parsed parts in ``parts`` (``{"user": SubjectId, "session": SubjectId, ...}``) and an
    ``aliases`` identifier its alternatives in ``aliases``.
    """

    format: str
    members: Mapping[str, Any] = field(default_factory=dict)
    parts: Mapping[str, SubjectId] = field(default_factory=dict)
    aliases: tuple[SubjectId, ...] = ()

    @property
    def iss_sub(self) -> tuple[str, str] | None:
        """(iss, sub) for an ``iss_sub`` identifier, else None."""
        if self.format == "iss_sub":
            return str(self.members["iss"]), str(self.members["sub"])
        return None

    @property
    def opaque_id(self) -> str | None:
        """The ``id`` of an ``opaque`` identifier, else None."""
        return str(self.members["id"]) if self.format == "opaque" else None

    @property
    def email(self) -> str | None:
        """The address of an ``email`` identifier, else None."""
        return str(self.members["email"]) if self.format == "email" else None

    def candidates(self) -> tuple[SubjectId, ...]:
        """This identifier, or for ``aliases`` each alternative (RFC 9493 §3.2.2: all name the
        same subject)."""
        return self.aliases if self.format == "aliases" else (self,)

    def describe(self) -> str:
        """A short, log-safe summary: the format(s) only, never the identifying values."""
        if self.format == "complex":
            return "complex(" + ",".join(sorted(self.parts)) + ")"
        if self.format == "aliases":
            return "aliases(" + ",".join(a.format for a in self.aliases) + ")"
        return self.format


def _bad(description: str) -> SETError:
    # RFC 8935 §2.4 invalid_request: "the Event Payload within the SET does not conform to
    # the event's definition" (sub_id is part of every SSF event, SSF 1.0 §3.1).
    return SETError("invalid_request", "sub_id_invalid", description)


def parse_subject(value: Any, *, _depth: int = 0) -> SubjectId:
    """Parse a Subject Identifier or Complex Subject; raise :class:`SETError` if malformed."""
    if _depth > _MAX_DEPTH:
        raise _bad("subject identifier nested too deeply")
    # RFC 9493 §3: "Subject Identifiers are JSON objects" with a REQUIRED "format" member.
    if not isinstance(value, dict):
        raise _bad("subject identifier is not a JSON object")
    fmt = value.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise _bad("subject identifier has no format")
    members = {k: v for k, v in value.items() if k != "format"}
    if fmt == "complex":
        # SSF 1.0 §3.3: "a JSON object that has a format field, and one or more Simple Subject
        # Members"; each member is itself a Subject Identifier.
        parts: dict[str, SubjectId] = {}
        for name, member in members.items():
            part = parse_subject(member, _depth=_depth + 1)
            if part.format in ("complex", "aliases"):
                raise _bad("a complex subject's members must be simple subject identifiers")
            parts[name] = part
        if not parts:
            raise _bad("complex subject has no members")
        return SubjectId("complex", members={}, parts=parts)
    if fmt == "aliases":
        # RFC 9493 §3.2.2: "identifiers" REQUIRED, a JSON array of Subject Identifiers, none of
        # which may itself be of format aliases.
        ids = members.get("identifiers")
        if not isinstance(ids, list) or not ids:
            raise _bad("aliases subject needs a non-empty identifiers array")
        parsed = tuple(parse_subject(i, _depth=_depth + 1) for i in ids)
        if any(p.format in ("aliases", "complex") for p in parsed):
            raise _bad("aliases identifiers must be simple subject identifiers")
        return SubjectId("aliases", members={}, aliases=parsed)
    if fmt == "ip-addresses":
        # SSF 1.0 §3.5.3: "ip-addresses" REQUIRED, an array of strings.
        ips = members.get("ip-addresses")
        if not isinstance(ips, list) or not ips or not all(isinstance(i, str) and i for i in ips):
            raise _bad("ip-addresses subject needs a non-empty array of strings")
        return SubjectId(fmt, members=members)
    for name in _REQUIRED.get(fmt, ()):
        v = members.get(name)
        if not isinstance(v, str) or not v:
            raise _bad(f"{fmt} subject identifier needs a non-empty {name!r} string")
    return SubjectId(fmt, members=members)
