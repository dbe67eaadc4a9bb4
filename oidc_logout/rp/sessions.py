"""Mapping OP sessions to the RP's own sessions, and server-side session storage.

* :class:`SessionIndex` answers "which of my local sessions belong to (iss, sid) or to
  (iss, sub)?" so a logout token can end them (Back-Channel Logout 1.0 §2.7).
* :class:`SessionStore` holds server-side session data keyed by an opaque random id, so
  ending a session deletes it on the server and not only the browser's cookie.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "MemorySessionIndex",
    "MemorySessionStore",
    "RenewableSessionIndex",
    "SessionIndex",
    "SessionStore",
]


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
class RenewableSessionIndex(SessionIndex, Protocol):
    """A :class:`SessionIndex` whose entries expire (Redis, SQL): it must outlive the session.

    The Flask integration calls :meth:`touch` with the session's lifetime every time it
    saves the session, so an index entry never expires while the session it points to is
    alive; otherwise a valid logout token would find nothing and end nothing (§2.7).
    """

    def touch(self, local_session_id: str, ttl: float) -> None:
        """Keep the entries of ``local_session_id`` for at least ``ttl`` more seconds
        (never shorten them). Unknown ids are ignored."""
        ...


@runtime_checkable
class SessionStore(Protocol):
    """Server-side session data keyed by an opaque session id."""

    def load(self, session_id: str) -> dict[str, Any] | None:
        """The session's data, or None if it does not exist (ended or expired)."""
        ...

    def save(self, session_id: str, data: dict[str, Any], ttl: float, *, must_exist: bool = False) -> bool:
        """Create or replace the session, valid for ``ttl`` seconds; return True if written.

        With ``must_exist=True`` the write only happens if the session still exists (done
        atomically where the backend allows): a request that loaded the session before a
        back-channel logout deleted it must not resurrect it when it saves.
        """
        ...

    def delete(self, session_id: str) -> None:
        """End the session; later loads return None. Deleting a missing id is fine."""
        ...


class MemorySessionIndex:
    """Process-local, thread-safe :class:`SessionIndex`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_local: dict[str, tuple[str, str | None, str | None]] = {}
        self._by_sid: dict[tuple[str, str], set[str]] = {}
        self._by_sub: dict[tuple[str, str], set[str]] = {}

    def register(self, iss: str, sub: str | None, sid: str | None, local_session_id: str) -> None:
        if sub is None and sid is None:
            raise ValueError("need sub or sid")
        with self._lock:
            self._forget(local_session_id)
            self._by_local[local_session_id] = (iss, sub, sid)
            if sid is not None:
                self._by_sid.setdefault((iss, sid), set()).add(local_session_id)
            if sub is not None:
                self._by_sub.setdefault((iss, sub), set()).add(local_session_id)

    def local_sessions_for(self, iss: str, sub: str | None = None, sid: str | None = None) -> set[str]:
        with self._lock:
            if sid is not None:
                return set(self._by_sid.get((iss, sid), ()))
            if sub is not None:
                return set(self._by_sub.get((iss, sub), ()))
            return set()

    def _forget(self, local_session_id: str) -> None:
        entry = self._by_local.pop(local_session_id, None)
        if entry is None:
            return
        iss, sub, sid = entry
        for table, key in ((self._by_sid, sid), (self._by_sub, sub)):
            if key is not None:
                ids = table.get((iss, key))
                if ids is not None:
                    ids.discard(local_session_id)
                    if not ids:
                        del table[(iss, key)]

    def forget(self, local_session_id: str) -> None:
        with self._lock:
            self._forget(local_session_id)


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

    def save(self, session_id: str, data: dict[str, Any], ttl: float, *, must_exist: bool = False) -> bool:
        with self._lock:
            if must_exist:
                item = self._data.get(session_id)
                if item is None or item[1] <= self._clock():
                    return False
            self._data[session_id] = (dict(data), self._clock() + ttl)
            return True

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._data.pop(session_id, None)
