"""retry.RetryPolicy: the pure arithmetic of when a failed job runs again."""

from __future__ import annotations

import random

import pytest

from aiojobs_redis.retry import RetryPolicy


def test_default_policy_retries_at_once() -> None:
    policy = RetryPolicy()
    assert [policy.delay_ms(n) for n in range(1, 6)] == [0, 0, 0, 0, 0]


def test_fixed_delay() -> None:
    policy = RetryPolicy(retry_after_ms=5_000)
    assert [policy.delay_ms(n) for n in range(1, 6)] == [5_000] * 5


def test_exponential_backoff() -> None:
    policy = RetryPolicy(retry_after_ms=1_000, backoff=2.0)
    assert [policy.delay_ms(n) for n in range(1, 7)] == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]


def test_fractional_backoff_rounds_to_whole_ms() -> None:
    policy = RetryPolicy(retry_after_ms=1_000, backoff=1.5)
    assert [policy.delay_ms(n) for n in range(1, 5)] == [1_000, 1_500, 2_250, 3_375]
    assert all(type(policy.delay_ms(n)) is int for n in range(1, 5))


def test_cap() -> None:
    policy = RetryPolicy(retry_after_ms=1_000, backoff=2.0, max_delay_ms=5_000)
    assert [policy.delay_ms(n) for n in range(1, 7)] == [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]


def test_cap_applies_to_a_fixed_delay_too() -> None:
    assert RetryPolicy(retry_after_ms=10_000, max_delay_ms=3_000).delay_ms(1) == 3_000


def test_default_cap_is_one_hour() -> None:
    assert RetryPolicy(retry_after_ms=1_000, backoff=10.0).delay_ms(10) == 3_600_000


def test_very_late_retry_is_capped_not_an_overflow() -> None:
    # 2.0 ** 1999 does not fit a float; a job with many attempts must still get the cap.
    policy = RetryPolicy(retry_after_ms=1_000, backoff=2.0, max_delay_ms=60_000)
    assert policy.delay_ms(2_000) == 60_000


def test_jitter_stays_within_half_to_full_delay() -> None:
    policy = RetryPolicy(retry_after_ms=8_000, jitter=True)
    rand = random.Random(1234)
    draws = [policy.delay_ms(1, rand) for _ in range(500)]
    assert all(4_000 <= d <= 8_000 for d in draws)
    assert len(set(draws)) > 100  # actually spread, not a constant
    assert min(draws) < 5_000
    assert max(draws) > 7_000


def test_jitter_applies_after_backoff_and_cap() -> None:
    policy = RetryPolicy(retry_after_ms=1_000, backoff=2.0, max_delay_ms=5_000, jitter=True)
    rand = random.Random(7)
    for n, full in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 5_000), (9, 5_000)]:
        draws = [policy.delay_ms(n, rand) for _ in range(100)]
        assert all(full / 2 <= d <= full for d in draws), (n, min(draws), max(draws))
        assert len(set(draws)) > 10


def test_jitter_is_reproducible_with_a_seeded_random() -> None:
    policy = RetryPolicy(retry_after_ms=10_000, jitter=True)
    first = [policy.delay_ms(n, random.Random(99)) for n in range(1, 4)]
    second = [policy.delay_ms(n, random.Random(99)) for n in range(1, 4)]
    assert first == second
    a, b = random.Random(1), random.Random(2)
    assert [policy.delay_ms(1, a) for _ in range(10)] != [policy.delay_ms(1, b) for _ in range(10)]


def test_jitter_with_zero_delay_is_zero() -> None:
    assert RetryPolicy(jitter=True).delay_ms(3, random.Random(0)) == 0


def test_no_jitter_ignores_the_random() -> None:
    rand = random.Random(5)
    state = rand.getstate()
    assert RetryPolicy(retry_after_ms=3_000).delay_ms(1, rand) == 3_000
    assert rand.getstate() == state


@pytest.mark.parametrize("retry_number", [0, -1, -100])
def test_retry_number_starts_at_one(retry_number: int) -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        RetryPolicy(retry_after_ms=1_000).delay_ms(retry_number)
