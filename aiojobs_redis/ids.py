"""Job ids: short, unique, and ordered by creation time within a process."""

from __future__ import annotations

import itertools
import secrets
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count(secrets.randbelow(36**4))


def _base36(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 36)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_job_id() -> str:
    """18 characters: creation ms, a per-process counter, and randomness across processes.

    Ids sort by creation time, which keeps jobs scheduled in the same millisecond in
    dispatch order (sorted-set ties are broken by member).
    """
    ms = time.time_ns() // 1_000_000
    return _base36(ms, 8) + _base36(next(_counter) % 36**4, 4) + _base36(secrets.randbits(31), 6)
