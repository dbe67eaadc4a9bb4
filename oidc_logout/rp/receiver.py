"""Back-channel logout receiver: validate, find the local sessions, end them.

:func:`handle_backchannel_request` is the framework-neutral HTTP layer (Back-Channel
Logout 1.0 §2.5 request, §2.8 response) for Django, FastAPI or any other framework.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs

from .errors import LogoutTokenError
from .sessions import SessionIndex
from .validation import LogoutToken, LogoutTokenValidator

__all__ = [
    "MAX_BODY_BYTES",
    "BackchannelLogoutReceiver",
    "LogoutResult",
    "handle_backchannel_request",
    "read_limited",
]

log = logging.getLogger(__name__)

#: Largest request body accepted by :func:`handle_backchannel_request` (bytes).
MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True)
class LogoutResult:
    """What a logout token did: the validated token and the local sessions it ended."""

    token: LogoutToken
    ended: frozenset[str]


class BackchannelLogoutReceiver:
    """Ties validator (with its replay cache), session index and session ending together.

    ``end_local_session(local_session_id)`` must destroy the RP's session server-side
    (delete it from the session store); it must tolerate ids that are already gone.
    """

    def __init__(
        self,
        validator: LogoutTokenValidator,
        sessions: SessionIndex,
        end_local_session: Callable[[str], None],
    ) -> None:
        self.validator = validator
        self.sessions = sessions
        self.end_local_session = end_local_session

    def receive(self, logout_token: str | bytes) -> LogoutResult:
        """Validate ``logout_token`` and end the matching local sessions.

        Raises :class:`LogoutTokenError` for an invalid token. A valid token that matches no
        session (already logged out) is a success with an empty ``ended`` set.
        """
        token = self.validator.validate(logout_token)
        # §2.7: with sid, end that OP session's RP sessions; without sid, "all sessions at
        # the RP for the End-User identified by the iss and sub Claims" (§2.4).
        if token.sid is not None:
            ids = self.sessions.local_sessions_for(token.iss, sid=token.sid)
        else:
            ids = self.sessions.local_sessions_for(token.iss, sub=token.sub)
        ended = set()
        for local_id in sorted(ids):
            self.end_local_session(local_id)
            self.sessions.forget(local_id)
            ended.add(local_id)
        log.info("back-channel logout ended %d local session(s)", len(ended))
        return LogoutResult(token=token, ended=frozenset(ended))


_NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


class Readable(Protocol):
    """A request body stream (WSGI ``wsgi.input``, Django's ``HttpRequest``, a file)."""

    def read(self, size: int = ..., /) -> bytes: ...


def read_limited(
    stream: Readable, content_length: int | str | None, limit: int = MAX_BODY_BYTES
) -> bytes | None:
    """Read a request body of at most ``limit`` bytes; None when it is (or says it is) larger.

    A declared ``Content-Length`` above the limit is refused before anything is read, and
    at most ``limit + 1`` bytes are ever read (chunked bodies have no length), so a huge
    POST costs no memory.
    """
    if content_length not in (None, ""):
        try:
            declared = int(content_length)
        except (TypeError, ValueError):
            declared = -1
        if declared < 0 or declared > limit:
            return None
        want = declared
    else:
        want = limit + 1
    chunks: list[bytes] = []
    total = 0
    while total < want:
        chunk = stream.read(min(want - total, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        return None
    return b"".join(chunks)


def _error(
    reason: str, description: str, status: int = 400, error: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    if error is None:
        error = "invalid_request" if status == 400 else "server_error"
    body = json.dumps({"error": error, "error_description": f"{reason}: {description}"}).encode()
    return status, [("Content-Type", "application/json"), *_NO_STORE], body


def handle_backchannel_request(
    body: bytes | str | Readable,
    content_type: str | None,
    receiver: BackchannelLogoutReceiver,
    *,
    content_length: int | str | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Process one back-channel logout POST; return (status, headers, body).

    ``body`` is the request body, or better a stream to read it from (``wsgi.input``,
    Django's ``request``) together with ``content_length`` (the header's value): then a
    body larger than :data:`MAX_BODY_BYTES` (16 KiB) is refused after reading at most
    16 KiB + 1 bytes, or none at all when ``Content-Length`` already says it is too large.

    §2.5: the OP POSTs ``logout_token`` as application/x-www-form-urlencoded. §2.8: answer
    200 on success (also when the session was already gone), 400 with ``invalid_request``
    otherwise; both with ``Cache-Control: no-store``. The error description names the
    failed rule and never echoes the token. A failure of the RP's own storage answers 500
    (503 for the replay cache) so that the OP retries.
    """
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != "application/x-www-form-urlencoded":
        return _error("bad_content_type", "expected application/x-www-form-urlencoded")
    if not isinstance(body, (bytes, str)):
        read = read_limited(body, content_length)
        if read is None:
            return _error("too_large", "request body exceeds the size limit")
        body = read
    if len(body) > MAX_BODY_BYTES:
        return _error("too_large", "request body exceeds the size limit")
    if isinstance(body, bytes):
        try:
            body = body.decode("ascii")
        except UnicodeDecodeError:
            return _error("malformed", "request body is not ASCII")
    try:
        form = parse_qs(body, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except ValueError:
        return _error("malformed", "request body is not a valid form")
    values = form.get("logout_token", [])
    if len(values) != 1 or not values[0]:
        return _error("token_missing", "exactly one logout_token parameter is required")
    try:
        receiver.receive(values[0])
    except LogoutTokenError as exc:
        return _error(exc.reason, exc.description, exc.status, exc.error)
    except Exception as exc:  # storage down etc.: not the OP's fault, let it retry
        log.error("back-channel logout failed: %s", type(exc).__name__)
        return _error("server_error", "the logout could not be processed", status=500)
    return 200, list(_NO_STORE), b""
