"""Sliding-window rate limits kept in the database (so every OP instance counts the same
events): failed sign-ins per account and per address, registrations per address.

Keys are hashed before they are stored: a password typed into the username field must not
end up in the database in clear.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from .config import Settings
from .storage.base import utcnow
from .storage.consent import add_event, clear_events, count_events, prune_events
from .tokens import token_hash

#: Events older than this (seconds) are dropped whenever a new one is recorded.
PRUNE_AFTER = 7 * 86400

__all__ = ["PRUNE_AFTER", "Limit", "exceeded", "login_limits", "record", "registration_limits", "reset"]


@dataclass(frozen=True)
class Limit:
    #: What is counted, e.g. ``login:account:alice`` (stored as its SHA-256).
    key: str
    #: Events allowed within ``window`` seconds; 0 disables the limit.
    max_events: int
    window: int

    @property
    def key_hash(self) -> str:
        return token_hash(self.key)


def login_limits(settings: Settings, username: str, address: str | None) -> list[Limit]:
    window = settings.login_throttle_window
    limits = [Limit(f"login:addr:{address or '-'}", settings.login_max_failures_per_address, window)]
    if username:
        # One account, however its name is cased or padded.
        limits.append(
            Limit(
                f"login:account:{username.strip().casefold()}",
                settings.login_max_failures_per_account,
                window,
            )
        )
    return [lim for lim in limits if lim.max_events > 0]


def registration_limits(settings: Settings, address: str | None) -> list[Limit]:
    lim = Limit(
        f"register:addr:{address or '-'}", settings.registration_rate_limit, settings.registration_rate_window
    )
    return [lim] if lim.max_events > 0 else []


def exceeded(db: Session, limits: Iterable[Limit], now: dt.datetime | None = None) -> int:
    """Seconds to wait (``Retry-After``) if any limit is used up, else 0."""
    now = now or utcnow()
    for lim in limits:
        if count_events(db, lim.key_hash, now - dt.timedelta(seconds=lim.window)) >= lim.max_events:
            return lim.window
    return 0


def record(db: Session, limits: Iterable[Limit], now: dt.datetime | None = None) -> None:
    """Count one event against every limit; drop events older than the longest window."""
    now = now or utcnow()
    longest = 0
    for lim in limits:
        add_event(db, lim.key_hash, now)
        longest = max(longest, lim.window)
    if longest:
        # Older than any sensible window (other limits may have longer ones than these).
        prune_events(db, now - dt.timedelta(seconds=max(longest, PRUNE_AFTER)))


def reset(db: Session, limits: Iterable[Limit]) -> None:
    for lim in limits:
        clear_events(db, lim.key_hash)
