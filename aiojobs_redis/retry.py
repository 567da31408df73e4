"""When to run a failed job again: a pure policy, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before retry n (1-based) = retry_after_ms * backoff ** (n - 1), capped.

    With `jitter`, the delay is drawn uniformly from [delay / 2, delay] so that jobs that
    failed together do not all come back at the same millisecond.
    """

    retry_after_ms: int = 0
    backoff: float = 1.0
    max_delay_ms: int = 3_600_000
    jitter: bool = False

    def delay_ms(self, retry_number: int, rand: random.Random | None = None) -> int:
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        try:
            delay = min(self.retry_after_ms * self.backoff ** (retry_number - 1), float(self.max_delay_ms))
        except OverflowError:  # a very late retry of a steep backoff: the cap applies
            delay = float(self.max_delay_ms)
        if self.jitter and delay > 0:
            delay = (rand or random).uniform(delay / 2, delay)
        return max(0, round(delay))
