"""Recording how a run ended: the worker's side of ack, retry, fail and release.

Each is a token-fenced engine call with three outcomes, told apart here and only here:
  done       the engine recorded it
  lost       the engine refused: this worker no longer holds the lease (another may run
             the job); counted as `lost`, reported to hooks and observers as "lost"
  gave up    the engine stayed unreachable for a whole lease; counted as `abandoned` and
             reported as "abandoned": the lease lapses and a reaper returns the job
An outage shorter than that is ridden out with backoff (`retrying`).

A job whose name no class here is registered under is not failed at once: another worker,
or the next deploy, may know it. It is deferred (put back, delayed, using no attempt), 5 s
after its first claim, then twice as long each time up to a minute, until it has been due
for longer than the worker's `unknown_job_grace`; then it fails as unknown_job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .clock import WorkerClock
from .codec import encode_payload
from .engine_base import WorkerEngine
from .errors import (
    BadResult,
    EngineError,
    InvalidPayload,
    MalformedJob,
    PayloadError,
    RateLimited,
    UnknownJob,
)
from .job import Job
from .lifecycle import Lifecycle, WorkerCounters
from .records import ClaimedJob
from .retry import Backoff, Fail, Succeeded, decide
from .runner import Outcome, log_failed_for_good

log = logging.getLogger("aiojobs_redis.worker")
job_log = logging.getLogger("aiojobs_redis.worker.jobs")  # a job done: see Worker(log_jobs=)

GAVE_UP: Final = object()  # retrying()'s answer when the engine stayed away past the deadline

UNKNOWN_RETRY_FIRST_MS: Final = 5_000  # a job of an unknown name runs again after this,
UNKNOWN_RETRY_MAX_MS: Final = 60_000  # twice as long after each claim, up to this
UNKNOWN_SAID_EVERY: Final = 60.0  # seconds between warnings about one unknown name


def unknown_retry_delay_ms(runs: int) -> int:
    """How long to defer a job of an unknown name, claimed `runs` times (1 the first time)."""
    return min(UNKNOWN_RETRY_MAX_MS, UNKNOWN_RETRY_FIRST_MS << min(max(runs - 1, 0), 8))


class Settler:
    """Records the end of each run a worker claimed, and counts it."""

    def __init__(
        self,
        engine: WorkerEngine,
        lifecycle: Lifecycle,
        counters: WorkerCounters,
        *,
        lease_ms: int,
        clock: WorkerClock,
        unknown_job_grace_ms: int = 3_600_000,
    ) -> None:
        self.engine, self.lifecycle, self.counters = engine, lifecycle, counters
        self.lease_ms, self.clock = lease_ms, clock
        self.unknown_job_grace_ms = unknown_job_grace_ms
        self._cut: list[str] = []  # runs cut before their outcome was recorded, not yet said
        self._unknown_said: dict[str, float] = {}  # unknown name -> when last warned about

    async def unrunnable(self, claimed: ClaimedJob, exc: Exception) -> None:
        """The record could not become a Job: defer it (an unknown name) or fail it."""
        if isinstance(exc, UnknownJob) and self.unknown_job_grace_ms > 0:
            await self._defer_unknown(claimed, exc)
        else:
            await self._fail_unrunnable(claimed, exc)

    async def _defer_unknown(self, claimed: ClaimedJob, exc: UnknownJob) -> None:
        delay_ms = unknown_retry_delay_ms(claimed.runs)
        record = Outcome(exc).error_record("unknown_job")
        answer = await self._answer(
            claimed,
            lambda: self.engine.defer(claimed, delay_ms, record, give_up_after_ms=self.unknown_job_grace_ms),
        )
        if answer is None:
            return
        if answer < 0:
            grace = self.unknown_job_grace_ms / 1000
            await self._fail_unrunnable(claimed, exc, f", and has been due for over {grace:g} s")
            return
        self.counters.deferred += 1
        await self.lifecycle.ended(claimed, "released")
        self._say_unknown(claimed, exc, delay_ms)

    def _say_unknown(self, claimed: ClaimedJob, exc: UnknownJob, delay_ms: int) -> None:
        """A warning once a minute per name, not per job: a deploy may leave thousands."""
        name = claimed.name.decode(errors="replace")
        now = self.clock.monotonic()
        last = self._unknown_said.get(name)
        if last is not None and now - last < UNKNOWN_SAID_EVERY:
            log.debug(
                "job %s in queue %s (%s) deferred for %.0f s",
                claimed.id,
                claimed.queue,
                name,
                delay_ms / 1000,
            )
            return
        if len(self._unknown_said) > 1000:  # names of jobs long gone: forget them
            self._unknown_said = {n: t for n, t in self._unknown_said.items() if now - t < UNKNOWN_SAID_EVERY}
        self._unknown_said[name] = now
        log.warning(
            "job %s in queue %s cannot run here: %s. Put back to run again in %.0f s, using no "
            "attempt (another worker may know it); jobs of this name fail as unknown_job once due "
            "for over %g s (unknown_job_grace). Said at most once a minute per name.",
            claimed.id,
            claimed.queue,
            exc,
            delay_ms / 1000,
            self.unknown_job_grace_ms / 1000,
        )

    async def _fail_unrunnable(self, claimed: ClaimedJob, exc: Exception, why: str = "") -> None:
        reason = (
            "unknown_job"
            if isinstance(exc, UnknownJob)
            else "malformed"
            if isinstance(exc, UnicodeDecodeError | MalformedJob)
            else "invalid_payload"
            if isinstance(exc, InvalidPayload)
            else "init_error"
        )
        log.error("job %s in queue %s cannot run (%s%s): %s", claimed.id, claimed.queue, reason, why, exc)
        record = Outcome(exc).error_record(reason)
        if await self._record(claimed, lambda: self.engine.fail(claimed, record, count_attempt=False)):
            self.counters.failed += 1
            await self.lifecycle.ended(claimed, "failed", error=exc)

    async def cancelled(self, claimed: ClaimedJob, *, lease_lost: bool) -> None:
        """The run was cancelled: its lease was lost, or the worker stopped (then release it)."""
        if lease_lost:
            await self._lost(claimed, "lease lost, result discarded")
        elif await self._record(claimed, lambda: self.engine.release(claimed)):
            self.counters.released += 1
            await self.lifecycle.ended(claimed, "released")
            log.info("job %s handed back to queue %s", claimed.id, claimed.queue)

    async def aborted(self, claimed: ClaimedJob) -> None:
        """The run was aborted: abort recorded its end already (and refuses any other)."""
        self.counters.aborted += 1
        await self.lifecycle.ended(claimed, "aborted")
        log.info("job %s %s: aborted, cancelled", claimed.id, claimed.name.decode(errors="replace"))

    async def settle(
        self, claimed: ClaimedJob, job: Job, outcome: Outcome, started: float | None = None
    ) -> BaseException | None:
        """handle() ended: record its outcome as retry.decide() says.

        Returns the error when the job was recorded as failed for good: the caller then runs
        `job.on_exhausted(error)` (runner.call_on_exhausted), in a scope a drain can cancel.
        `started` (the clock's monotonic time when handle() started) asks for the INFO line
        of a job done, with its duration; None logs nothing.
        """
        error = outcome.error
        if error is None:  # decide() says Succeeded: skipped on the hot path, saving a call
            ack: Callable[[], Awaitable[bool]] | None = lambda: self.engine.ack(claimed)  # noqa: E731
            if job.keep_result_ms:
                ack = await self._ack_keeping(claimed, job, outcome)
            if ack is not None and await self._record(claimed, ack):
                self.counters.succeeded += 1
                await self.lifecycle.ended(claimed, "succeeded", job)
                if started is not None:
                    job_log.info(
                        "job %s %s done in %.1f ms (attempt %d/%d)",
                        claimed.id,
                        job.name,
                        (self.clock.monotonic() - started) * 1000,
                        claimed.attempt,
                        claimed.max_attempts,
                    )
            return None
        if isinstance(error, RateLimited) and await self._throttled(claimed, job, error):
            return None
        decision = decide(job, outcome, claimed.attempt, claimed.max_attempts)
        assert not isinstance(decision, Succeeded)
        if isinstance(decision, Fail):
            record = outcome.error_record(decision.reason)
            if await self._record(claimed, lambda: self._fail(claimed, job, record)):
                self.counters.failed += 1
                log_failed_for_good(
                    log,
                    job,
                    error,
                    queue=claimed.queue,
                    attempt=claimed.attempt,
                    max_attempts=claimed.max_attempts,
                    reason=decision.reason,
                )
                await self.lifecycle.ended(claimed, "failed", job, error)
                return error
            return None
        record = outcome.error_record("rate_limited" if isinstance(error, RateLimited) else None)
        if await self._record(claimed, lambda: self.engine.retry(claimed, decision.delay_ms, record)):
            self.counters.retried += 1
            await self.lifecycle.ended(claimed, "retried", job, error)
            log.warning(
                "job %s %s attempt %d/%d failed, retry in %.3f s: %s",
                claimed.id,
                job.name,
                claimed.attempt,
                claimed.max_attempts,
                decision.delay_ms / 1000,
                outcome.summary,
            )
        return None

    async def _throttled(self, claimed: ClaimedJob, job: Job, error: RateLimited) -> bool:
        """handle() raised RateLimited: put the job back using no attempt, its group (or queue)
        held for the error's retry_after. True when done (or the lease is gone); False when it
        was throttled `job.max_throttles` times already: the run is then a failed attempt."""
        answer = await self._answer(
            claimed, lambda: self.engine.throttle(claimed, error.retry_after_ms, job.max_throttles)
        )
        if answer is None:
            return True
        if answer < 0:
            return False
        self.counters.throttled += 1
        await self.lifecycle.ended(claimed, "released", job, error)
        log.info(
            "job %s %s rate limited: put back, no attempt used; its group (or queue) waits %.3f s",
            claimed.id,
            job.name,
            error.retry_after_ms / 1000,
        )
        return True

    def _fail(self, claimed: ClaimedJob, job: Job, record: dict[str, Any]) -> Awaitable[bool]:
        if job.keep_result_ms:  # waiters on its result are told at once
            return self.engine.fail(claimed, record, notify=True)
        return self.engine.fail(claimed, record)

    async def _ack_keeping(
        self, claimed: ClaimedJob, job: Job, outcome: Outcome
    ) -> Callable[[], Awaitable[bool]] | None:
        """The ack of a class with keep_result, with what handle() returned as JSON.

        A value that cannot be kept (not JSON, or over max_payload_bytes) fails the job for
        good instead (then None), reason "bad_result", without a retry (its work is done:
        running it again could repeat it) and without on_exhausted(); its waiters get
        JobFailed saying why.
        """
        try:
            result = encode_payload(outcome.value, self.engine.settings.max_payload_bytes)
        except PayloadError as exc:
            bad = BadResult(f"{job.name}.handle() returned a value that cannot be kept: {exc}")
            record = Outcome(bad).error_record("bad_result")
            if await self._record(claimed, lambda: self.engine.fail(claimed, record, notify=True)):
                self.counters.failed += 1
                log.error("job %s %s failed for good (bad_result): %s", claimed.id, job.name, bad)
                await self.lifecycle.ended(claimed, "failed", job, bad)
            return None
        keep_ms = job.keep_result_ms
        return lambda: self.engine.ack(claimed, result=result, keep_ms=keep_ms)

    # -- recording a run's end: done, lost, or gave up ---------------------------------------

    async def _answer(self, claimed: ClaimedJob, call: Callable[[], Awaitable[int]]) -> int | None:
        """A fenced call that answers 1 (done), 0 (not held) or -1 (refused, nothing changed):
        its answer once recorded, None when not (lost or abandoned, said by _record)."""
        answer = 0

        async def record() -> bool:
            nonlocal answer
            answer = await call()
            return answer != 0

        return answer if await self._record(claimed, record) else None

    async def _record(self, claimed: ClaimedJob, call: Callable[[], Awaitable[bool]]) -> bool:
        """Run a token-fenced transition; True when recorded. Otherwise says why, here only:
        the lease is no longer held (lost), or the engine stayed away until the lease ran out
        (abandoned: the lease lapses and a reaper returns the job to its queue)."""
        settled = await retrying(self.clock, f"settle {claimed.id}", call, self.lease_ms / 1000)
        if settled is True:
            return True
        if settled is GAVE_UP:
            self.counters.abandoned += 1
            log.error(
                "job %s %s: outcome not recorded, the engine was unreachable for %.1f s; "
                "its lease lapses and the job returns to its queue",
                claimed.id,
                claimed.name.decode(errors="replace"),
                self.lease_ms / 1000,
            )
            await self.lifecycle.ended(claimed, "abandoned")
        else:
            await self._lost(claimed, "lease no longer held, outcome not recorded")
        return False

    async def _lost(self, claimed: ClaimedJob, why: str) -> None:
        self.count_lost(claimed, why)
        await self.lifecycle.ended(claimed, "lost")

    def count_lost(self, claimed: ClaimedJob, why: str) -> None:
        self.counters.lost += 1
        log.warning("job %s %s: %s", claimed.id, claimed.name.decode(errors="replace"), why)

    def cut(self, claimed: ClaimedJob) -> None:
        """The run's task ended before its outcome was recorded (the worker was cancelled):
        lost. Counted here whatever listens; said for all at once by report_cut()."""
        self.counters.lost += 1
        self._cut.append(claimed.id)
        self.lifecycle.forget(claimed)

    def report_cut(self, worker_id: str) -> None:
        """One line for the runs cut at once: a hard stop may cut hundreds."""
        if self._cut:
            shown = ", ".join(self._cut[:10]) + (", ..." if len(self._cut) > 10 else "")
            log.warning(
                "worker %s: %d job(s) cut off before their outcome was recorded, counted lost "
                "(their leases lapse and a reaper returns them): %s",
                worker_id,
                len(self._cut),
                shown,
            )
            self._cut.clear()


async def retrying(
    clock: WorkerClock, what: str, call: Callable[[], Awaitable[object]], deadline: float = math.inf
) -> object:
    """Call until it succeeds, backing off while the engine is away, for at most `deadline` s.

    Returns the call's answer, or GAVE_UP past the deadline (a lease has lapsed by then
    anyway, and a reaper will take the job back).
    """
    started = clock.monotonic()
    try:
        return await call()  # the common case: no cancel scope, no timer
    except EngineError as exc:
        error = exc
    backoff = Backoff()
    with clock.move_on_after(deadline - (clock.monotonic() - started)):
        while True:
            delay = backoff.next_delay()
            log.warning("%s failed (%s); retrying in %.2f s", what, error, delay)
            await clock.sleep(delay)
            try:
                return await call()
            except EngineError as exc:
                error = exc
    log.error("%s: gave up after %.1f s", what, deadline)
    return GAVE_UP
