"""PostgreSQL LISTEN/NOTIFY wake-ups: a committed termination wakes every worker at once
instead of at its next poll. Polling stays the safety net (a missed notification, SQLite).

``NOTIFY`` is transactional: it is sent in the termination's transaction and delivered only if
that transaction commits, exactly like the outbox rows it announces.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

CHANNEL = "oidc_logout_deliveries"
logger = logging.getLogger(__name__)


def announce(db: Session) -> None:
    """Queue a wake-up for the workers in the caller's transaction (PostgreSQL only)."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text(f"NOTIFY {CHANNEL}"))


class Listener:
    """A thread holding one dedicated connection that LISTENs and calls ``on_notify``;
    reconnects with a bounded backoff when the connection drops."""

    def __init__(self, engine: Engine, on_notify: Callable[[], None]) -> None:
        self._engine = engine
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oidc-logout-listen", daemon=True)

    def start(self) -> Listener:
        if self._engine.dialect.name == "postgresql":
            self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay, failing = 0.5, False
        while not self._stop.is_set():
            try:
                raw = self._engine.raw_connection()
                conn = raw.driver_connection
                raw.detach()  # a dedicated connection, never returned to the pool
                try:
                    conn.autocommit = True  # type: ignore[union-attr]
                    conn.execute(f"LISTEN {CHANNEL}")  # type: ignore[union-attr]
                    if failing:
                        logger.info("LISTEN %s resumed", CHANNEL)
                    delay, failing = 0.5, False
                    self._on_notify()  # catch up on anything committed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):  # type: ignore[union-attr]
                            self._on_notify()
                finally:
                    raw.close()
            except Exception as exc:
                # One warning per outage, not per reconnect attempt: while the database is
                # down the dispatcher's loop already reports it once per backoff step, and
                # polling covers the missing wake-ups.
                log = logger.warning if not failing else logger.debug
                log("LISTEN %s failed (%s); retrying in %.1fs", CHANNEL, type(exc).__name__, delay)
                failing = True
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)


__all__ = ["CHANNEL", "Listener", "announce"]
