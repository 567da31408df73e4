"""Turn the public ways of saying a delay into integer milliseconds.

Accepted: ``"now"``, ``"+N unit"`` (unit: second(s), minute(s), hour(s), day(s), week(s)),
``int``/``float`` seconds and ``datetime.timedelta``. Everything else is an InvalidDelay
(a ValueError) whose message quotes the bad value.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import TypeAlias

from .errors import InvalidDelay

Delay: TypeAlias = "str | int | float | timedelta"

_UNIT_MS = {
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 604_800_000,
}
_DELAY_RE = re.compile(r"\+([0-9]+(?:\.[0-9]+)?) (second|minute|hour|day|week)s?", re.ASCII)
# Ten years: anything longer is a mistake, and a huge score would break float precision.
MAX_DELAY_MS = 10 * 365 * 86_400_000


def to_ms(value: object, *, what: str = "delay") -> int:
    """Return `value` as a non-negative whole number of milliseconds."""
    if isinstance(value, bool):  # bool is an int; True seconds is never meant
        raise InvalidDelay(f"invalid {what} {value!r}: expected seconds, a timedelta or '+N unit'")
    if isinstance(value, str):
        ms = _parse_string(value, what)
    elif isinstance(value, timedelta):
        ms = _seconds_to_ms(value.total_seconds(), value, what)
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise InvalidDelay(f"invalid {what}: {value!r:.40} is longer than ten years") from None
        ms = _seconds_to_ms(seconds, value, what)
    else:
        raise InvalidDelay(
            f"invalid {what} {value!r}: expected seconds, a timedelta or a string like '+5 minutes'"
        )
    if ms > MAX_DELAY_MS:
        raise InvalidDelay(f"invalid {what} {value!r}: longer than ten years")
    return ms


def _parse_string(text: str, what: str) -> int:
    if text == "now":
        return 0
    match = _DELAY_RE.fullmatch(text)
    if match is None:
        raise InvalidDelay(
            f"invalid {what} {text!r}: expected 'now' or '+N unit' with unit "
            "second(s), minute(s), hour(s), day(s) or week(s), e.g. '+5 minutes'"
        )
    amount, unit = match.groups()
    ms = float(amount) * _UNIT_MS[unit]
    if not ms <= MAX_DELAY_MS:  # also catches inf from absurdly long numbers
        raise InvalidDelay(f"invalid {what} {text!r}: longer than ten years")
    return round(ms)


def _seconds_to_ms(seconds: float, original: object, what: str) -> int:
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidDelay(f"invalid {what} {original!r}: must be a finite number >= 0 seconds")
    if seconds * 1000 > MAX_DELAY_MS:
        raise InvalidDelay(f"invalid {what} {original!r}: longer than ten years")
    return round(seconds * 1000)
