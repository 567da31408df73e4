"""The inline engine (JOB_ENGINE=sync): dispatch() runs handle() at once and touches no Redis.

For tests and development. Jobs keep their semantics (payloads go through JSON, attempts,
PermanentFailure, retry_on/fail_on, on_exhausted, timeouts) and the retry-or-fail decision is
the worker's (retry.decide), but delays and retry waits are skipped: a job dispatched with
"+5 minutes" runs at once, and its retries run back to back. A job whose handle() raises
RateLimited runs again at once too, using no attempt, up to its class's max_throttles
times; after that a RateLimited is a failed attempt (reason "rate_limited"), as in a worker.

A job that fails for good raises in the caller of dispatch(): the exception its last try
raised, re-raised once it is in `engine.failed` and on_exhausted() has run (a TimeoutError
for a timeout). dispatch_many() stops at the first such job. To only log and record it,
pass `SyncEngine(raise_on_failure=False)`, or set `sync_raise_on_failure=False`
(environment: JOB_SYNC_RAISE_ON_FAILURE=0).

Middleware run as in a worker: each job class's own, inside the engine's
`SyncEngine(middleware=[...])` (a Worker's `middleware`, for tests of code that needs it).

What a class with keep_result returns is kept in `engine.results` (the last 10,000 such
results): `SomeJob.ref(job_id).result()` returns it, or raises JobFailed / JobNotFound, at once.

Chains, batches and depends_on run inline too (sync_flows.py): a flow's jobs run in order
inside dispatch(), each once the jobs it depends on have ended.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .codec import decode_payload, encode_payload
from .config import Settings
from .errors import BadResult, JobFailed, JobNotFound, PayloadError, RateLimited
from .ids import new_job_id
from .middleware import Chains, Middleware, middleware_tuple
from .retry import SUCCEEDED, Fail, decide
from .runner import Outcome, call_on_exhausted, log_failed_for_good, run_handler
from .sync_flows import KEPT, Recent, SyncFlows
from .typed_payloads import decode_job_payload, encode_job_payload

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncFailure:
    id: str
    name: str
    attempts: int
    error: BaseException
    reason: str = "error"  # as a worker records it: error, permanent, timeout, rate_limited


class SyncEngine(SyncFlows):
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        raise_on_failure: bool | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.settings = settings or Settings(engine="sync")
        self.raise_on_failure = (
            self.settings.sync_raise_on_failure if raise_on_failure is None else raise_on_failure
        )
        self.failed: list[SyncFailure] = []
        self.completed: list[str] = []
        self.results: dict[str, Any] = Recent(KEPT)  # job id -> what handle() returned (keep_result)
        # Run as a Worker(middleware=...) would, outside each job class's own.
        self.middleware = middleware_tuple(middleware, "SyncEngine(middleware=...)")
        self._chains = Chains(self.middleware)
        self._init_flows()

    async def __aenter__(self) -> SyncEngine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        return None

    async def dispatch(self, job: Job, *, durable: bool | None = None) -> str:
        """Run `job` now. `durable` is accepted and ignored: nothing is stored, nothing replicated."""
        data = encode_job_payload(job, self.settings.max_payload_bytes)
        job_id = new_job_id()
        job.id = job_id
        error = await self._run(job, data, job_id)
        if error is not None and self.raise_on_failure:
            raise error
        return job_id

    async def _run(self, job: Job, data: bytes, job_id: str) -> BaseException | None:
        """Run `job` to its end, every attempt it needs: None when it succeeded, else what it
        failed with for good (recorded in `failed`, on_exhausted() called)."""
        attempt, throttles = 1, 0
        while attempt <= job.attempts:
            run = type(job)(decode_job_payload(type(job), data))
            run.id, run.attempt = job_id, attempt
            outcome = await run_handler(run, None, self._chains[type(run)])
            if isinstance(outcome.error, RateLimited) and throttles < job.max_throttles:
                throttles += 1  # no wait here: run it again, using no attempt
                log.info("job %s %s rate limited (%d), running it again", job_id, job.name, throttles)
                continue
            decision = decide(run, outcome, attempt, job.attempts)
            if decision is SUCCEEDED:
                self.completed.append(job_id)
                kept = self._keep(run, outcome.value) if job.keep_result_ms else None
                if kept is None:
                    self._ended(job_id, True)
                return kept
            assert outcome.error is not None
            if isinstance(decision, Fail):
                error = outcome.error
                log_failed_for_good(
                    log,
                    run,
                    error,
                    queue=job.queue,
                    attempt=attempt,
                    max_attempts=job.attempts,
                    reason=decision.reason,
                )
                self._failed_for_good(job_id, job.name, attempt, error, decision.reason)
                await call_on_exhausted(run, error)
                return error
            log.info(
                "job %s %s attempt %d failed, retrying: %s",
                job_id,
                job.name,
                attempt,
                outcome.summary,
            )
            attempt += 1
        return None

    async def dispatch_many(self, jobs: Sequence[Job], *, durable: bool | None = None) -> list[str]:
        """Run each job in turn; with raise_on_failure, the first that fails for good raises."""
        for job in jobs:  # validate every payload before running any
            encode_job_payload(job, self.settings.max_payload_bytes)
        return [await self.dispatch(job) for job in jobs]

    def _keep(self, run: Job, value: Any) -> BadResult | None:
        """Keep what handle() returned, as JSON gives it back; a value that cannot be kept
        fails the job as a worker would (bad_result): that error is returned."""
        try:
            self.results[str(run.id)] = decode_payload(encode_payload(value, self.settings.max_payload_bytes))
        except PayloadError as exc:
            error = BadResult(f"{run.name}.handle() returned a value that cannot be kept: {exc}")
            error.__cause__ = exc
            self._failed_for_good(str(run.id), run.name, run.attempt, error, "bad_result")
            return error
        return None

    def _failed_for_good(
        self, job_id: str, name: str, attempts: int, error: BaseException, reason: str
    ) -> None:
        self.failed.append(SyncFailure(job_id, name, attempts, error, reason))
        self._ended(job_id, False)

    async def result(self, queue: str, job_id: str, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """The kept result of a job this engine ran (it has ended by now: no wait)."""
        if job_id in self.results:
            return self.results[job_id]
        for failure in self.failed:
            if failure.id == job_id:
                raise JobFailed(job_id, Outcome(failure.error).error_record(failure.reason))
        raise JobNotFound(f"job {job_id}: not run here, or its class keeps no result (keep_result)")

    def __repr__(self) -> str:
        return f"<SyncEngine completed={len(self.completed)} failed={len(self.failed)}>"
