"""Recording how a run ended: the worker's side of ack, retry, fail and release.

Each is a token-fenced engine call with three outcomes, told apart here and only here:
  done       the engine recorded it
  lost       the engine refused: this worker no longer holds the lease (another may run
             the job); counted as `lost`, reported to hooks and observers as "lost"
  gave up    the engine stayed unreachable for a whole lease; counted as `abandoned` and
             reported as "abandoned": the lease lapses and a reaper returns the job
An outage shorter than that is ridden out with backoff (`retrying`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final

from .clock import WorkerClock
from .engine_base import WorkerEngine
from .errors import EngineError, InvalidPayload, MalformedJob, UnknownJob
from .job import Job
from .lifecycle import Lifecycle, WorkerCounters
from .records import ClaimedJob
from .retry import Backoff, Fail, Succeeded, decide
from .runner import Outcome, log_failed_for_good

log = logging.getLogger("aiojobs_redis.worker")

GAVE_UP: Final = object()  # retrying()'s answer when the engine stayed away past the deadline


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
    ) -> None:
        self.engine, self.lifecycle, self.counters = engine, lifecycle, counters
        self.lease_ms, self.clock = lease_ms, clock
        self._cut: list[str] = []  # runs cut before their outcome was recorded, not yet said

    async def unrunnable(self, claimed: ClaimedJob, exc: Exception) -> None:
        reason = (
            "unknown_job"
            if isinstance(exc, UnknownJob)
            else "malformed"
            if isinstance(exc, UnicodeDecodeError | MalformedJob)
            else "invalid_payload"
            if isinstance(exc, InvalidPayload)
            else "init_error"
        )
        log.error("job %s in queue %s cannot run (%s): %s", claimed.id, claimed.queue, reason, exc)
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

    async def settle(self, claimed: ClaimedJob, job: Job, outcome: Outcome) -> BaseException | None:
        """handle() ended: record its outcome as retry.decide() says.

        Returns the error when the job was recorded as failed for good: the caller then runs
        `job.on_exhausted(error)` (runner.call_on_exhausted), in a scope a drain can cancel.
        """
        error = outcome.error
        if error is None:  # decide() says Succeeded: skipped on the hot path, saving a call
            if await self._record(claimed, lambda: self.engine.ack(claimed)):
                self.counters.succeeded += 1
                await self.lifecycle.ended(claimed, "succeeded", job)
                log.debug("job %s %s done (attempt %d)", claimed.id, job.name, claimed.attempt)
            return None
        decision = decide(job, outcome, claimed.attempt, claimed.max_attempts)
        assert not isinstance(decision, Succeeded)
        if isinstance(decision, Fail):
            record = outcome.error_record(decision.reason)
            if await self._record(claimed, lambda: self.engine.fail(claimed, record)):
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
        record = outcome.error_record()
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

    # -- recording a run's end: done, lost, or gave up ---------------------------------------

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
                "worker %s: %d job(s) stopped before their outcome was recorded, counted lost "
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
