"""Replay protection for logout tokens (Back-Channel Logout 1.0 §2.6 step 8).

A ``jti`` is remembered per issuer until the token carrying it can no longer pass
validation anyway (its ``exp`` or its ``iat`` acceptance window, plus leeway), so the store
stays small and a replay inside the validity window is always caught.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["MemoryReplayCache", "ReplayCache"]


@runtime_checkable
class ReplayCache(Protocol):
    """Atomic "first one wins" store of seen (iss, jti) pairs."""

    def add_if_absent(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record (iss, jti) until ``expires_at`` (epoch seconds).

        Return True if it was not present (first delivery), False if it was (a replay).
        Must be atomic: of two concurrent calls with the same pair exactly one gets True.
        """
        ...


class MemoryReplayCache:
    """Process-local, thread-safe replay cache; evicts expired entries as it goes.

    Only suitable for a single RP process: with several replicas use the Redis or
    SQLAlchemy backend so every replica sees every jti.
    """

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def _evict(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            exp, key = heapq.heappop(self._heap)
            if self._seen.get(key) == exp:
                del self._seen[key]

    def add_if_absent(self, iss: str, jti: str, expires_at: float) -> bool:
        key = (iss, jti)
        with self._lock:
            now = self._clock()
            self._evict(now)
            if key in self._seen:
                return False
            if len(self._seen) >= self._max:
                # Refuse rather than forget: dropping entries would re-open replays.
                raise OverflowError("replay cache is full")
            self._seen[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def discard(self, iss: str, jti: str) -> None:
        """Forget (iss, jti): its processing failed, so a retry must not count as a replay."""
        with self._lock:
            self._seen.pop((iss, jti), None)

    def __len__(self) -> int:
        with self._lock:
            self._evict(self._clock())
            return len(self._seen)
