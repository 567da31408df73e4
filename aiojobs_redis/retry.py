"""When to run a failed job again: pure policy, no I/O.

`decide()` is the one retry-or-fail decision, used by the worker and by SyncEngine alike.
`Backoff` is the worker's (and the CLI's) reconnect delay while the engine is away.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from .errors import RateLimited, RetryLater

if TYPE_CHECKING:
    from .job import Job
    from .runner import Outcome

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class Succeeded:
    """handle() returned: record the job as done."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the job again after `delay_ms`, using one attempt."""

    delay_ms: int


@dataclass(frozen=True, slots=True)
class Fail:
    """Fail the job for good; `reason` is the error record's reason code."""

    reason: str  # "error" (no attempts left), "permanent", "timeout" or "rate_limited"


Decision: TypeAlias = Succeeded | Retry | Fail
SUCCEEDED: Final = Succeeded()


def decide(job: Job, outcome: Outcome, attempt: int, max_attempts: int) -> Decision:
    """What to do with run `attempt` (1-based) of `job` that ended with `outcome`.

    PermanentFailure, an exception in `job.fail_on`, or one outside `job.retry_on` (when
    set) fails at once; otherwise the job is retried while attempts are left, after the
    RetryLater delay if one was given, else `job.retry_delay(exc, attempt)`. A RetryLater
    with no attempts left gets a note saying so (the one change made to `outcome`).
    A RateLimited that reaches here (the job was throttled `max_throttles` times already)
    is a failed attempt with reason "rate_limited", retried after its retry_after.
    """
    error = outcome.error
    if error is None:
        return SUCCEEDED
    if isinstance(error, RateLimited):
        return Fail("rate_limited") if attempt >= max_attempts else Retry(error.retry_after_ms)
    if outcome.permanent or not job.retries(error):
        return Fail("timeout" if outcome.timed_out else "permanent")
    if attempt >= max_attempts:
        if isinstance(error, RetryLater):
            _note(error, _no_retry_left(max_attempts))
        return Fail("timeout" if outcome.timed_out else "error")
    if isinstance(error, RetryLater) and error.delay_ms is not None:
        return Retry(error.delay_ms)
    try:
        return Retry(job.retry_delay_ms(error, attempt))
    except Exception:
        log.exception("job %s %s: retry_delay() failed; using the retry policy", job.id, job.name)
        return Retry(job.retry_policy.delay_ms(attempt))


def _no_retry_left(max_attempts: int) -> str:
    if max_attempts == 1:
        return (
            "RetryLater was raised but no attempts are left (attempts = 1, the default); "
            "set attempts on the job class to allow retries"
        )
    return f"RetryLater was raised on the last of {max_attempts} attempts: no attempts are left"


def _note(error: BaseException, note: str) -> None:
    """Say why in the exception itself: its traceback, the stored error and a re-raise show it."""
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)


class Backoff:
    """Capped, jittered exponential backoff for reconnecting (seconds)."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.failures = first, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0.5, 1.0) * min(self.cap, self.first * 2.0 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0
