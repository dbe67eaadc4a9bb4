"""Mapping OP sessions to the RP's own sessions, and server-side session storage.

* :class:`SessionIndex` answers "which of my local sessions belong to (iss, sid) or to
  (iss, sub)?" so a logout token can end them (Back-Channel Logout 1.0 §2.7).
* :class:`SessionStore` holds server-side session data keyed by an opaque random id, so
  ending a session deletes it on the server and not only the browser's cookie.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol, runtime_checkable

__all__ = ["SessionIndex", "SessionStore", "MemorySessionIndex", "MemorySessionStore"]


@runtime_checkable
class SessionIndex(Protocol):
    """Which local sessions belong to an OP session (sid) or an OP user (sub)."""

    def register(self, iss: str, sub: str | None, sid: str | None, local_session_id: str) -> None:
        """Remember that ``local_session_id`` was created from an ID token with sub/sid."""
        ...

    def local_sessions_for(self, iss: str, sub: str | None = None, sid: str | None = None) -> set[str]:
        """Local sessions for (iss, sid) if ``sid`` is given, else all of (iss, sub)."""
        ...

    def forget(self, local_session_id: str) -> None:
        """Drop every mapping that points at ``local_session_id``."""
        ...


@runtime_checkable
class SessionStore(Protocol):
    """Server-side session data keyed by an opaque session id."""

    def load(self, session_id: str) -> dict[str, Any] | None:
        """The session's data, or None if it does not exist (ended or expired)."""
        ...

    def save(self, session_id: str, data: dict[str, Any], ttl: float) -> None:
        """Create or replace the session, valid for ``ttl`` seconds."""
        ...

    def delete(self, session_id: str) -> None:
        """End the session; later loads return None. Deleting a missing id is fine."""
        ...


class MemorySessionIndex:
    """Process-local, thread-safe :class:`SessionIndex`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_local: dict[str, tuple[str, str | None, str | None]] = {}

    def register(self, iss: str, sub: str | None, sid: str | None, local_session_id: str) -> None:
        if sub is None and sid is None:
            raise ValueError("need sub or sid")
        with self._lock:
            self._by_local[local_session_id] = (iss, sub, sid)

    def local_sessions_for(self, iss: str, sub: str | None = None, sid: str | None = None) -> set[str]:
        if sub is None and sid is None:
            return set()
        with self._lock:
            if sid is not None:
                return {k for k, (i, _, s) in self._by_local.items() if i == iss and s == sid}
            return {k for k, (i, u, _) in self._by_local.items() if i == iss and u == sub}

    def forget(self, local_session_id: str) -> None:
        with self._lock:
            self._by_local.pop(local_session_id, None)


class MemorySessionStore:
    """Process-local, thread-safe :class:`SessionStore` (single process only)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, tuple[dict[str, Any], float]] = {}

    def load(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._data.get(session_id)
            if item is None:
                return None
            if item[1] <= self._clock():
                del self._data[session_id]
                return None
            return dict(item[0])

    def save(self, session_id: str, data: dict[str, Any], ttl: float) -> None:
        with self._lock:
            self._data[session_id] = (dict(data), self._clock() + ttl)

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._data.pop(session_id, None)
