"""Retry policy of the delivery outbox: pure functions, no I/O, no clock of their own.

Back-Channel Logout 1.0 §2.8 leaves retries to the OP; we retry transient failures with
exponential backoff and *full jitter* (delay drawn uniformly from ``[0, min(cap, base*2^n)]``)
so that thousands of deliveries failing together against one recovering RP do not come back
as a synchronized wave. We give up by age (``delivery_max_age``), not by attempt count: how
many attempts fit in an outage depends on the backoff, how long the RP's users stay logged in
does not.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Protocol

__all__ = ["backoff_delay", "give_up_reason", "is_exhausted", "next_attempt_at"]


class _Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


_rng = random.SystemRandom()


def backoff_delay(attempts: int, *, base: float, cap: float, rng: _Uniform | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based), full jitter."""
    if attempts < 1:
        attempts = 1
    # Cap the exponent first: 2**1000 as float overflows.
    ceiling = min(float(cap), float(base) * (2.0 ** min(attempts - 1, 64)))
    if ceiling <= 0:
        return 0.0
    return (rng or _rng).uniform(0.0, ceiling)


def give_up_reason(
    *,
    attempts: int,
    created_at: dt.datetime,
    now: dt.datetime,
    max_age: float,
    max_attempts: int | None = None,
) -> str | None:
    """Why a delivery whose attempt just failed (retryably) must go ``dead``, or None to
    retry it.

    The default gives up by *age*, not by count: a row is retried (capped exponential
    backoff) until it is ``max_age`` seconds old, however many attempts that takes, so an RP
    outage shorter than ``max_age`` dead-letters nothing. ``max_attempts`` is an optional
    extra cap (None or 0: unlimited, the default); ``attempts`` already counts the attempt
    that just failed."""
    age = (now - created_at).total_seconds()
    if age >= max_age:
        return f"gave up: older than delivery_max_age ({max_age:g} s) after {attempts} attempts"
    if max_attempts and attempts >= max_attempts:
        return f"gave up: delivery_max_attempts ({max_attempts}) reached"
    return None


def is_exhausted(
    *,
    attempts: int,
    created_at: dt.datetime,
    now: dt.datetime,
    max_age: float,
    max_attempts: int | None = None,
) -> bool:
    """True when a failed delivery must go ``dead`` (see :func:`give_up_reason`)."""
    return (
        give_up_reason(
            attempts=attempts, created_at=created_at, now=now, max_age=max_age, max_attempts=max_attempts
        )
        is not None
    )


def next_attempt_at(
    *,
    now: dt.datetime,
    attempts: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    retry_after_cap: float | None = None,
    rng: _Uniform | None = None,
) -> dt.datetime:
    """When to try again. An RP's ``Retry-After`` (429/503) wins over backoff, capped at
    ``retry_after_cap`` (a hostile RP must not park a delivery for a year)."""
    if retry_after is not None:
        delay = max(0.0, retry_after)
        if retry_after_cap is not None:
            delay = min(delay, float(retry_after_cap))
    else:
        delay = backoff_delay(attempts, base=base, cap=cap, rng=rng)
    return now + dt.timedelta(seconds=delay)
