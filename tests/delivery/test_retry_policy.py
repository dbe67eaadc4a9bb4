"""Backoff with full jitter, dead-lettering and Retry-After precedence (pure functions)."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given
from hypothesis import strategies as st

from oidc_logout.config import Settings
from oidc_logout.delivery.policy import backoff_delay, give_up_reason, is_exhausted, next_attempt_at

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@given(
    attempts=st.integers(min_value=-5, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=100),
    cap=st.floats(min_value=0.0, max_value=10_000),
)
def test_backoff_stays_within_zero_and_the_exponential_ceiling(
    attempts: int, base: float, cap: float
) -> None:
    d = backoff_delay(attempts, base=base, cap=cap)
    ceiling = min(cap, base * 2.0 ** (max(attempts, 1) - 1)) if attempts < 64 else cap
    assert 0.0 <= d <= max(ceiling, 0.0) + 1e-9


def test_backoff_uses_full_jitter() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(5, base=1, cap=300, rng=rng) for _ in range(500)]
    assert min(delays) < 2 and max(delays) > 14  # spread over [0, 16]


def test_last_attempt_and_max_age_make_a_delivery_dead() -> None:
    kw = {"created_at": T0, "max_attempts": 3, "max_age": 3600}
    assert not is_exhausted(attempts=2, now=T0, **kw)
    assert is_exhausted(attempts=3, now=T0, **kw)
    assert is_exhausted(attempts=1, now=T0 + dt.timedelta(hours=1), **kw)


def test_default_settings_give_up_by_age_not_by_count() -> None:
    s = Settings()
    kw = {"created_at": T0, "max_attempts": s.delivery_max_attempts, "max_age": s.delivery_max_age}
    young = T0 + dt.timedelta(seconds=s.delivery_max_age - 1)
    assert not is_exhausted(attempts=10_000, now=young, **kw)
    reason = give_up_reason(attempts=3, now=T0 + dt.timedelta(seconds=s.delivery_max_age), **kw)
    assert reason is not None and "older than delivery_max_age" in reason


def test_retry_after_wins_over_backoff_but_is_capped() -> None:
    at = next_attempt_at(now=T0, attempts=1, base=1, cap=10, retry_after=120, retry_after_cap=600)
    assert at == T0 + dt.timedelta(seconds=120)
    at = next_attempt_at(now=T0, attempts=1, base=1, cap=10, retry_after=10**9, retry_after_cap=600)
    assert at == T0 + dt.timedelta(seconds=600)
    at = next_attempt_at(now=T0, attempts=3, base=1, cap=10)
    assert T0 <= at <= T0 + dt.timedelta(seconds=4)
