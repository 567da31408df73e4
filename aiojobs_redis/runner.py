"""Running one handle() call and describing how it ended. Shared by the worker and SyncEngine."""

from __future__ import annotations

import inspect
import logging
import math
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .errors import PermanentFailure
from .middleware import Chain, context_of, run_chain

if TYPE_CHECKING:
    from .job import Job
    from .lifecycle import JobContext

log = logging.getLogger(__name__)

TRACEBACK_LIMIT = 8_000  # characters kept of a failure's traceback


@dataclass(frozen=True, slots=True)
class Outcome:
    error: BaseException | None = None
    permanent: bool = False
    timed_out: bool = False
    value: Any = None  # what handle(), or a middleware, returned (kept only with keep_result)

    @property
    def summary(self) -> str:
        if self.error is None:
            return "ok"
        return f"{type(self.error).__name__}: {self.error}"

    def error_record(self, reason: str | None = None) -> dict[str, Any]:
        """What is stored in the job's error field: reason code, type, message, traceback."""
        err = self.error
        if reason is None:
            reason = "timeout" if self.timed_out else "permanent" if self.permanent else "error"
        if err is None:
            return {"reason": reason}
        text = "".join(traceback.format_exception(err))
        if len(text) > TRACEBACK_LIMIT:
            text = "...\n" + text[-TRACEBACK_LIMIT:]
        notes = getattr(err, "__notes__", None)  # e.g. why a RetryLater could not retry
        message = "\n".join([str(err), *notes]) if isinstance(notes, list) else str(err)
        return {
            "reason": reason,
            "type": f"{type(err).__module__}.{type(err).__qualname__}",
            "message": message[:2000],
            "traceback": text,
        }


SUCCEEDED = Outcome()  # shared: an Outcome is immutable


async def run_handler(job: Job, ctx: JobContext | None = None, chain: Chain = ()) -> Outcome:
    """Await job.handle() inside its middleware `chain`, within its timeout; never raises
    except for cancellation. The middleware get `ctx`, else one made of the job alone."""
    timeout_ms = job.timeout_ms
    value: Any = None
    try:
        if timeout_ms is None:
            value = await (job.handle() if not chain else run_chain(chain, ctx or context_of(job), job))
        else:
            with anyio.move_on_after(timeout_ms / 1000) as scope:
                value = await (job.handle() if not chain else run_chain(chain, ctx or context_of(job), job))
            if scope.cancelled_caught:
                what = "handle()" if not chain else "handle() with its middleware"
                exc = TimeoutError(f"{what} ran past its timeout of {timeout_ms / 1000:g} s")
                return Outcome(exc, timed_out=True)
    except PermanentFailure as exc:
        return Outcome(exc, permanent=True)
    except Exception as exc:
        return Outcome(exc)
    return SUCCEEDED if value is None else Outcome(value=value)


# The template is the same for every failure (error trackers group by it and by the attached
# exception's stack); the job's name comes first so that plain-text logs group too.
FAILED_FOR_GOOD = "job %s %s failed for good after attempt %d/%d (%s): %s: %s"


def log_failed_for_good(
    logger: logging.Logger,
    job: Job,
    error: BaseException,
    *,
    queue: str,
    attempt: int,
    max_attempts: int,
    reason: str,
) -> None:
    """The one ERROR line a job that failed for good gets.

    The message template is the same for every failure and the exception is attached, so
    error trackers (Sentry's logging integration, ...) group the events and show the stack;
    the details are also the record's attributes.
    """
    logger.error(
        FAILED_FOR_GOOD,
        job.name,
        job.id,
        attempt,
        max_attempts,
        reason,
        type(error).__name__,
        error,
        exc_info=error,
        extra={
            "job_id": job.id,
            "job_name": job.name,
            "job_queue": queue,
            "job_attempt": attempt,
            "job_max_attempts": max_attempts,
            "job_failure_reason": reason,
        },
    )


async def call_on_exhausted(job: Job, error: BaseException) -> None:
    """Run `job.on_exhausted(error)` within the job's `timeout` (no limit when it has none).

    What it raises, and running past the timeout, are logged and change nothing: the job
    has already been recorded as failed. A stopping worker cancels it like a handle().
    """
    timeout_ms = job.timeout_ms
    try:
        with anyio.move_on_after(math.inf if timeout_ms is None else timeout_ms / 1000) as scope:
            returned = job.on_exhausted(error)
            if inspect.isawaitable(returned):
                await returned
    except Exception:
        log.exception("job %s %s: on_exhausted() raised; the job stays failed", job.id, job.name)
        return
    if scope.cancelled_caught:
        log.error(
            "job %s %s: on_exhausted() ran past the job's timeout of %g s and was cancelled",
            job.id,
            job.name,
            (timeout_ms or 0) / 1000,
        )
