"""SQLAlchemy backends: replay cache, session index and session store.

The tables are the library's own (``table_prefix`` defaults to ``oidc_logout_rp_``) and
are created with :meth:`RPTables.create_all`; they work on SQLite and PostgreSQL. Several
RP replicas sharing one database share the replay cache and the sessions.

Expired rows are purged on a schedule without a background thread: every backend runs its
``purge_expired()`` during a write at most once per ``purge_interval`` seconds (per
process; ``None`` turns it off if you run the purge from a cron job instead).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Double,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

__all__ = ["RPTables", "SQLAReplayCache", "SQLASessionIndex", "SQLASessionStore"]

Clock = Callable[[], float]

#: Flask's default ``PERMANENT_SESSION_LIFETIME`` (31 days).
DEFAULT_INDEX_TTL = 31 * 86400.0
DEFAULT_PURGE_INTERVAL = 3600.0


class _PurgeSchedule:
    """Says when a backend's opportunistic purge is due (first write, then every interval)."""

    def __init__(self, clock: Clock, interval: float | None) -> None:
        self._clock = clock
        self._interval = interval
        self._next = float("-inf")
        self._lock = threading.Lock()

    def due(self) -> bool:
        if self._interval is None:
            return False
        with self._lock:
            now = self._clock()
            if now < self._next:
                return False
            self._next = now + self._interval
            return True


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class RPTables:
    """The three tables, named ``{prefix}replay``, ``{prefix}session_index``, ``{prefix}session``."""

    def __init__(self, table_prefix: str = "oidc_logout_rp_") -> None:
        self.metadata = MetaData()
        p = table_prefix
        # jti is stored as its SHA-256 so the unique index has a bounded key size whatever
        # the OP puts in jti (tokens are capped at 8 KiB, btree keys are not).
        self.replay = Table(
            f"{p}replay",
            self.metadata,
            Column("iss", String(1024), nullable=False),
            Column("jti_sha256", String(64), nullable=False),
            Column("expires_at", Double, nullable=False),
            UniqueConstraint("iss", "jti_sha256", name=f"{p}replay_iss_jti_uq"),
            Index(f"{p}replay_expires_ix", "expires_at"),
        )
        self.index = Table(
            f"{p}session_index",
            self.metadata,
            Column("local_session_id", String(128), primary_key=True),
            Column("iss", String(1024), nullable=False),
            Column("sub_sha256", String(64), nullable=True),
            Column("sid_sha256", String(64), nullable=True),
            # When the entry may be purged; renewed with the session (NULL: never).
            Column("expires_at", Double, nullable=True),
            Index(f"{p}session_index_sid_ix", "iss", "sid_sha256"),
            Index(f"{p}session_index_sub_ix", "iss", "sub_sha256"),
            Index(f"{p}session_index_expires_ix", "expires_at"),
        )
        self.session = Table(
            f"{p}session",
            self.metadata,
            Column("id", String(128), primary_key=True),
            Column("data", Text, nullable=False),
            Column("expires_at", Double, nullable=False),
        )

    def create_all(self, engine: Engine) -> None:
        self.metadata.create_all(engine)

    def drop_all(self, engine: Engine) -> None:
        self.metadata.drop_all(engine)


class SQLAReplayCache:
    """:class:`~oidc_logout.rp.replay.ReplayCache` on a table with UNIQUE (iss, jti).

    Atomicity comes from the database: the INSERT of a second copy violates the unique
    constraint. An expired row for the same pair is deleted and the insert retried once.
    """

    def __init__(
        self,
        engine: Engine,
        tables: RPTables | None = None,
        *,
        clock: Clock = time.time,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
    ) -> None:
        self.engine = engine
        self.tables = tables or RPTables()
        self.clock = clock
        self._purge = _PurgeSchedule(clock, purge_interval)

    def add_if_absent(self, iss: str, jti: str, expires_at: float) -> bool:
        if self._purge.due():
            self.purge_expired()
        t = self.tables.replay
        key = _digest(jti)
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(t).values(iss=iss, jti_sha256=key, expires_at=expires_at))
                return True
            except IntegrityError:
                if attempt:
                    return False
                with self.engine.begin() as conn:
                    gone = conn.execute(
                        delete(t).where(t.c.iss == iss, t.c.jti_sha256 == key, t.c.expires_at <= self.clock())
                    ).rowcount
                if not gone:
                    return False
        return False

    def discard(self, iss: str, jti: str) -> None:
        """Forget (iss, jti): its processing failed, so a retry must not count as a replay."""
        t = self.tables.replay
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.iss == iss, t.c.jti_sha256 == _digest(jti)))

    def purge_expired(self) -> int:
        """Delete rows that can no longer matter; run periodically. Returns rows deleted."""
        t = self.tables.replay
        with self.engine.begin() as conn:
            return conn.execute(delete(t).where(t.c.expires_at <= self.clock())).rowcount


class SQLASessionIndex:
    """:class:`~oidc_logout.rp.sessions.RenewableSessionIndex` in a table (sub/sid hashed).

    A row may be purged ``ttl`` seconds (default 31 days) after :meth:`register` or after the
    last :meth:`touch`, which :class:`~oidc_logout.rp.flask.RPLogout` calls with the session's
    lifetime whenever it saves the session, so a row outlives its session. Expired rows are
    purged during writes at most once per ``purge_interval`` seconds.
    """

    def __init__(
        self,
        engine: Engine,
        tables: RPTables | None = None,
        *,
        clock: Clock = time.time,
        ttl: float = DEFAULT_INDEX_TTL,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
    ) -> None:
        self.engine = engine
        self.tables = tables or RPTables()
        self.clock = clock
        self.ttl = float(ttl)
        self._purge = _PurgeSchedule(clock, purge_interval)

    def register(self, iss: str, sub: str | None, sid: str | None, local_session_id: str) -> None:
        if sub is None and sid is None:
            raise ValueError("need sub or sid")
        if self._purge.due():
            self.purge_expired()
        t = self.tables.index
        row = dict(
            local_session_id=local_session_id,
            iss=iss,
            sub_sha256=_digest(sub) if sub is not None else None,
            sid_sha256=_digest(sid) if sid is not None else None,
            expires_at=self.clock() + self.ttl,
        )
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.local_session_id == local_session_id))
            conn.execute(insert(t).values(**row))

    def local_sessions_for(self, iss: str, sub: str | None = None, sid: str | None = None) -> set[str]:
        t = self.tables.index
        if sid is not None:
            cond = t.c.sid_sha256 == _digest(sid)
        elif sub is not None:
            cond = t.c.sub_sha256 == _digest(sub)
        else:
            return set()
        with self.engine.connect() as conn:
            return set(conn.execute(select(t.c.local_session_id).where(t.c.iss == iss, cond)).scalars())

    def forget(self, local_session_id: str) -> None:
        t = self.tables.index
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.local_session_id == local_session_id))

    def touch(self, local_session_id: str, ttl: float) -> None:
        """Keep the row for at least ``ttl`` more seconds (never shortens it)."""
        t = self.tables.index
        until = self.clock() + ttl
        with self.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.local_session_id == local_session_id, t.c.expires_at < until)
                .values(expires_at=until)
            )

    def purge_expired(self) -> int:
        """Delete rows past their expiry; returns rows deleted (also runs on a schedule)."""
        t = self.tables.index
        with self.engine.begin() as conn:
            return conn.execute(delete(t).where(t.c.expires_at <= self.clock())).rowcount


class SQLASessionStore:
    """:class:`~oidc_logout.rp.sessions.SessionStore` in a table; data is stored as JSON."""

    def __init__(
        self,
        engine: Engine,
        tables: RPTables | None = None,
        *,
        clock: Clock = time.time,
        purge_interval: float | None = DEFAULT_PURGE_INTERVAL,
    ) -> None:
        self.engine = engine
        self.tables = tables or RPTables()
        self.clock = clock
        self._purge = _PurgeSchedule(clock, purge_interval)

    def load(self, session_id: str) -> dict[str, Any] | None:
        t = self.tables.session
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.c.data).where(t.c.id == session_id, t.c.expires_at > self.clock())
            ).first()
        return json.loads(row[0]) if row else None

    def save(self, session_id: str, data: dict[str, Any], ttl: float, *, must_exist: bool = False) -> bool:
        if self._purge.due():
            self.purge_expired()
        t = self.tables.session
        payload = json.dumps(data, separators=(",", ":"))
        now = self.clock()
        with self.engine.begin() as conn:
            n = conn.execute(
                update(t)
                .where(t.c.id == session_id, t.c.expires_at > now)
                .values(data=payload, expires_at=now + ttl)
            ).rowcount
            if n or must_exist:
                return bool(n)
            conn.execute(delete(t).where(t.c.id == session_id))  # an expired leftover
            conn.execute(insert(t).values(id=session_id, data=payload, expires_at=now + ttl))
            return True

    def delete(self, session_id: str) -> None:
        t = self.tables.session
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.id == session_id))

    def purge_expired(self) -> int:
        """Delete expired sessions; returns rows deleted (also runs on a schedule)."""
        t = self.tables.session
        with self.engine.begin() as conn:
            return conn.execute(delete(t).where(t.c.expires_at <= self.clock())).rowcount
