"""Job ids: short, unique, and ordered by creation time within a process."""

from __future__ import annotations

import random
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 2-digit base-36 string, in order
_SEQ_LIMIT = 36**4
_last_ms = 0
_seq = 0
_ms_text = ""


def _base36(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 36)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_job_id() -> str:
    """18 characters: creation ms, a sequence within that ms, and randomness across processes.

    Ids made by one process sort in creation order (even if the wall clock steps back),
    which keeps jobs scheduled in the same millisecond in dispatch order: sorted-set ties
    are broken by member.
    """
    global _last_ms, _seq, _ms_text
    ms = time.time_ns() // 1_000_000
    if ms > _last_ms:
        _last_ms, _seq, _ms_text = ms, 0, _base36(ms, 8)
    else:
        _seq += 1
        if _seq == _SEQ_LIMIT:  # more ids in one ms than the sequence holds: borrow the next ms
            _last_ms, _seq = _last_ms + 1, 0
            _ms_text = _base36(_last_ms, 8)
    # The random module's own generator: seeded from os.urandom and seeded again in a forked
    # child, so processes differ; SystemRandom would cost a system call per id.
    rand = random.getrandbits(31)
    return (
        _ms_text
        + _PAIRS[_seq // 1296]
        + _PAIRS[_seq % 1296]
        + _PAIRS[(rand // 1679616) % 1296]
        + _PAIRS[(rand // 1296) % 1296]
        + _PAIRS[rand % 1296]
    )
