"""Redis backends: replay cache, session index and session store.

Share one Redis between RP replicas so that a jti seen by any replica is a replay for all
of them, and a back-channel logout received by one replica ends the session everywhere.
Keys are ``{prefix}…`` with user-controlled parts hashed (no key injection, bounded size).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

import redis as redis_lib

__all__ = ["RedisReplayCache", "RedisSessionIndex", "RedisSessionStore"]

DEFAULT_PREFIX = "oidc_logout:rp:"


def _h(*parts: str | None) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


# Extend-only expiry: EXPIRE each key to ARGV[1] seconds unless it already lives longer (or
# forever). A (iss, sub) set is shared by all of a user's sessions, so registering or
# renewing one session must never shorten the entry another, longer-lived session needs.
# (EXPIRE ... GT would do the same but needs Redis 7.)
_EXTEND_TTL = """
local ttl = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local current = redis.call('TTL', key)
  if current ~= -1 and current < ttl then
    redis.call('EXPIRE', key, ttl)
  end
end
return 0
"""

# SADD ARGV[2] to each set, which then lives at least ARGV[1] seconds: a new set gets that
# TTL, an existing one is only ever extended.
_ADD_MEMBER = """
local ttl = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local current = redis.call('TTL', key)
  redis.call('SADD', key, ARGV[2])
  if current == -2 or (current ~= -1 and current < ttl) then
    redis.call('EXPIRE', key, ttl)
  end
end
return 0
"""

#: Flask's default ``PERMANENT_SESSION_LIFETIME`` (31 days).
DEFAULT_INDEX_TTL = 31 * 86400


class RedisReplayCache:
    """:class:`~oidc_logout.rp.replay.ReplayCache` using ``SET key 1 NX PX ttl`` (atomic)."""

    def __init__(
        self, client: redis_lib.Redis, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock

    def add_if_absent(self, iss: str, jti: str, expires_at: float) -> bool:
        ttl_ms = max(1000, math.ceil((expires_at - self.clock()) * 1000))
        return bool(self.client.set(f"{self.prefix}jti:{_h(iss, jti)}", b"1", nx=True, px=ttl_ms))

    def discard(self, iss: str, jti: str) -> None:
        """Forget (iss, jti): its processing failed, so a retry must not count as a replay."""
        self.client.delete(f"{self.prefix}jti:{_h(iss, jti)}")


class RedisSessionIndex:
    """:class:`~oidc_logout.rp.sessions.RenewableSessionIndex` with one Redis set per
    (iss, sid) and per (iss, sub), plus a reverse entry per local session for :meth:`forget`.

    Entries live at least ``ttl`` seconds after :meth:`register` (default 31 days, Flask's
    default session lifetime) and at least ``ttl`` seconds after each :meth:`touch`, which
    :class:`~oidc_logout.rp.flask.RPLogout` calls with the session's lifetime whenever it
    saves the session. Without RPLogout, call ``touch`` where you renew your sessions, or set
    ``ttl`` to your longest session lifetime. Expiry is only ever extended, never shortened.
    """

    def __init__(
        self, client: redis_lib.Redis, *, prefix: str = DEFAULT_PREFIX, ttl: float = DEFAULT_INDEX_TTL
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = int(ttl)
        self._extend = client.register_script(_EXTEND_TTL)
        self._add_member = client.register_script(_ADD_MEMBER)

    def _sid_key(self, iss: str, sid: str) -> str:
        return f"{self.prefix}idx:sid:{_h(iss, sid)}"

    def _sub_key(self, iss: str, sub: str) -> str:
        return f"{self.prefix}idx:sub:{_h(iss, sub)}"

    def _local_key(self, local_session_id: str) -> str:
        return f"{self.prefix}idx:local:{_h(local_session_id)}"

    def register(self, iss: str, sub: str | None, sid: str | None, local_session_id: str) -> None:
        if sub is None and sid is None:
            raise ValueError("need sub or sid")
        self.forget(local_session_id)
        keys = []
        if sid is not None:
            keys.append(self._sid_key(iss, sid))
        if sub is not None:
            keys.append(self._sub_key(iss, sub))
        local_key = self._local_key(local_session_id)
        pipe = self.client.pipeline(transaction=True)
        self._add_member(keys=keys, args=[self.ttl, local_session_id], client=pipe)
        pipe.set(local_key, json.dumps(keys), ex=self.ttl)
        pipe.execute()

    def touch(self, local_session_id: str, ttl: float) -> None:
        """Keep this session's entries for at least ``ttl`` more seconds (never shortens)."""
        local_key = self._local_key(local_session_id)
        raw = self.client.get(local_key)
        if raw is None:
            return
        seconds = max(1, math.ceil(ttl))
        self._extend(keys=[local_key, *json.loads(raw)], args=[seconds])

    def local_sessions_for(self, iss: str, sub: str | None = None, sid: str | None = None) -> set[str]:
        if sid is not None:
            key = self._sid_key(iss, sid)
        elif sub is not None:
            key = self._sub_key(iss, sub)
        else:
            return set()
        return {m.decode() if isinstance(m, bytes) else m for m in self.client.smembers(key)}

    def forget(self, local_session_id: str) -> None:
        local_key = self._local_key(local_session_id)
        raw = self.client.get(local_key)
        if raw is None:
            return
        pipe = self.client.pipeline(transaction=True)
        for key in json.loads(raw):
            pipe.srem(key, local_session_id)
        pipe.delete(local_key)
        pipe.execute()


class RedisSessionStore:
    """:class:`~oidc_logout.rp.sessions.SessionStore` with one JSON string per session."""

    def __init__(self, client: redis_lib.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}session:{_h(session_id)}"

    def load(self, session_id: str) -> dict[str, Any] | None:
        raw = self.client.get(self._key(session_id))
        return json.loads(raw) if raw is not None else None

    def save(self, session_id: str, data: dict[str, Any], ttl: float, *, must_exist: bool = False) -> bool:
        payload = json.dumps(data, separators=(",", ":"))
        # XX: only update a session that still exists (atomic in Redis).
        ok = self.client.set(self._key(session_id), payload, px=max(1000, int(ttl * 1000)), xx=must_exist)
        return bool(ok)

    def delete(self, session_id: str) -> None:
        self.client.delete(self._key(session_id))
