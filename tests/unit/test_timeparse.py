"""timeparse.to_ms: the accepted ways of saying a delay, and everything it must refuse."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from aiojobs_redis.errors import AiojobsRedisError, InvalidDelay
from aiojobs_redis.timeparse import MAX_DELAY_MS, to_ms

TEN_YEARS_S = 10 * 365 * 86_400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("now", 0),
        ("+0 seconds", 0),
        ("+1 second", 1_000),
        ("+1 seconds", 1_000),
        ("+30 seconds", 30_000),
        ("+1.5 seconds", 1_500),
        ("+0.25 seconds", 250),
        ("+1 minute", 60_000),
        ("+5 minutes", 300_000),
        ("+5 minute", 300_000),
        ("+1 hour", 3_600_000),
        ("+2 hours", 7_200_000),
        ("+1 day", 86_400_000),
        ("+3 days", 259_200_000),
        ("+1 week", 604_800_000),
        ("+2 weeks", 1_209_600_000),
        ("+05 minutes", 300_000),
    ],
)
def test_strings(value: str, expected: int) -> None:
    assert to_ms(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1, 1_000),
        (5, 5_000),
        (0.0, 0),
        (0.05, 50),
        (1.5, 1_500),
        (0.0004, 0),
        (0.0006, 1),
        (timedelta(0), 0),
        (timedelta(seconds=5), 5_000),
        (timedelta(minutes=5), 300_000),
        (timedelta(milliseconds=1_500), 1_500),
        (timedelta(days=1, hours=1), 90_000_000),
    ],
)
def test_numbers_and_timedeltas(value: int | float | timedelta, expected: int) -> None:
    result = to_ms(value)
    assert result == expected
    assert type(result) is int


def test_result_is_int_for_fractional_strings() -> None:
    assert type(to_ms("+1.5 seconds")) is int


def test_ten_years_is_the_limit() -> None:
    assert MAX_DELAY_MS == TEN_YEARS_S * 1000
    assert to_ms(TEN_YEARS_S) == MAX_DELAY_MS
    assert to_ms(timedelta(days=3650)) == MAX_DELAY_MS
    assert to_ms("+3650 days") == MAX_DELAY_MS
    with pytest.raises(InvalidDelay, match="ten years"):
        to_ms(TEN_YEARS_S + 0.001)
    with pytest.raises(InvalidDelay, match="ten years"):
        to_ms(timedelta(days=3650, milliseconds=1))
    with pytest.raises(InvalidDelay, match="ten years"):
        to_ms("+3651 days")
    with pytest.raises(InvalidDelay, match="ten years"):
        to_ms("+522 weeks")


REJECTED: list[object] = [
    "5 minutes",
    "+5 mins",
    "+5 min",
    "+5 secs",
    "+-1 seconds",
    "-1 seconds",
    "+1e3 seconds",
    "+.5 seconds",
    "+5. seconds",
    "tomorrow",
    "",
    " ",
    "Now",
    "NOW",
    " now",
    " +5 minutes",
    "+5 minutes ",
    "+5 minutes\n",
    "+5  minutes",
    "+5minutes",
    "+5 Minutes",
    "+5 minutess",
    "+5 months",
    "+5 years",
    "+5 minutes ago",
    "5",
    -1,
    -0.001,
    -1e-9,
    timedelta(seconds=-1),
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    [5],
    ["+5 minutes"],
    (5,),
    {"seconds": 5},
    b"+5 minutes",
    1e12,
    10**12,
    timedelta.max,
]


@pytest.mark.parametrize("value", REJECTED, ids=repr)
def test_rejections(value: object) -> None:
    with pytest.raises(InvalidDelay) as info:
        to_ms(value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AiojobsRedisError)
    assert repr(value) in str(info.value)


def test_rejection_names_what_was_parsed() -> None:
    with pytest.raises(InvalidDelay, match=r"^invalid MyJob\.timeout 'soon'"):
        to_ms("soon", what="MyJob.timeout")
    with pytest.raises(InvalidDelay, match=r"^invalid delay -5"):
        to_ms(-5)


def test_huge_int_is_an_invalid_delay_not_an_overflow() -> None:
    # An int too large for a float: must be refused like any other over-long delay.
    with pytest.raises(InvalidDelay):
        to_ms(10**400)


def test_huge_string_amount_is_an_invalid_delay_not_an_overflow() -> None:
    # float("999...9") is inf, and round(inf * 1000) raises OverflowError.
    with pytest.raises(InvalidDelay):
        to_ms("+" + "9" * 400 + " seconds")
