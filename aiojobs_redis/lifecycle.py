"""What a worker reports about each job run, passed on to the user's hooks and to observers.

`Lifecycle` is the one object the worker talks to about runs. It tells the `Observer`s
(Prometheus metrics, the Redis event stream; built by the worker, see worker.py) and runs
the user's `Hooks` (hooks.py). Observers never see the Worker: their side task gets a
`WorkerView` (its id, queues, counters, running jobs and engine).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

if TYPE_CHECKING:
    from .engine_base import WorkerEngine
    from .hooks import Hooks
    from .job import Job
    from .metrics import JobTracer
    from .middleware import Chain
    from .records import ClaimedJob
    from .runner import Outcome

log = logging.getLogger(__name__)

Result = Literal["succeeded", "retried", "failed", "released", "lost", "abandoned", "aborted"]
"""How one run of a job ended: done; failed with attempts left; failed for good; handed back
to its queue unfinished (the worker stopped, or no class is registered under its name here:
then it is deferred, see settle.py); the lease was lost and the outcome discarded;
or the engine stayed unreachable until the lease ran out, so the outcome was not recorded
("abandoned": the job's lease lapses and a reaper returns it to its queue); or it was
aborted while running (abort.py: its end, aborted, was recorded by the abort)."""


class Handler(Protocol):
    """What runs one job: runner.run_handler."""

    def __call__(self, job: Job, ctx: JobContext | None = None, chain: Chain = ()) -> Awaitable[Outcome]: ...


@dataclass(slots=True, eq=False)
class JobContext:
    """One run of one job, as hooks, observers and middleware see it. Never holds the
    payload's text (`job`, the Job, holds the payload)."""

    worker_id: str
    queue: str
    job_id: str
    name: str
    attempt: int  # 1 on the first try
    max_attempts: int
    job: Job | None = None  # None when the record could not become a Job (unknown name, bad data)
    started_ms: int = 0  # wall-clock time handle() was about to start (ms since the epoch)
    duration: float | None = None  # seconds handle() ran; None until it has ended
    result: Result | None = None  # set when the run's end is reported
    error: BaseException | None = None  # what handle() raised, if anything
    state: dict[str, Any] = field(default_factory=dict)  # for hooks: carry values from before to after

    @property
    def failed(self) -> bool:
        return self.result in ("retried", "failed")


@dataclass
class WorkerCounters:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    deferred: int = 0  # put back unrun, no class being registered under its name here
    lost: int = 0  # lease lost while running: the result was discarded
    abandoned: int = 0  # outcome not recorded: the engine stayed unreachable past the lease
    quarantined: int = 0
    aborted: int = 0  # aborted while running here (abort.py): cancelled
    throttled: int = 0  # put back unrun-counted: handle() raised RateLimited (no attempt used)

    def describe(self) -> str:
        """In words, e.g. "5 claimed, 4 succeeded, 1 failed for good, 0 retried, 0 handed back";
        the rarer endings only when they happened."""
        words = [
            f"{self.claimed} claimed",
            f"{self.succeeded} succeeded",
            f"{self.failed} failed for good",
            f"{self.retried} retried",
            f"{self.released} handed back",
        ]
        rare = {
            "lost (outcome not recorded: lease lost, or stopped at once)": self.lost,
            "abandoned (outcome not recorded: Redis unreachable)": self.abandoned,
            "aborted": self.aborted,
            "bad records set aside": self.quarantined,
            "put back (no class by that name here)": self.deferred,
            "rate limited (put back, no attempt used)": self.throttled,
        }
        words += [f"{count} {what}" for what, count in rare.items() if count]
        return ", ".join(words)


@dataclass(frozen=True, eq=False)
class WorkerView:
    """What an observer's side task may read of the worker it serves."""

    worker_id: str
    queues: Sequence[str]
    concurrency: int
    counters: WorkerCounters  # live: the worker updates it
    running: Mapping[tuple[str, str], JobContext]  # live: (job id, lease token) -> its run
    engine: WorkerEngine


class Observer:
    """Told of every job a worker runs: metrics, events. Override what you need.

    The job methods run on the worker's hot path: they must be quick, synchronous, and
    must not do I/O (buffer, and send from `serve`). `serve` runs beside the worker for its
    whole life and is cancelled when the worker stops; it must not raise.
    """

    def job_started(self, ctx: JobContext) -> None:
        """handle() is about to run."""

    def job_ended(self, ctx: JobContext) -> None:
        """The run ended with `ctx.result`; `ctx.job` is None for a record that never ran."""

    def jobs_reclaimed(self, queue: str, requeued: Sequence[str], failed: Sequence[str]) -> None:
        """This worker's reaper found lapsed leases: jobs requeued, or failed for stalling."""

    async def serve(self, worker: WorkerView) -> None:
        """Background work while the worker runs (flushing buffers, polling)."""


class Lifecycle:
    """What the worker reports about each job, passed on to the hooks and the observers.

    `running` holds the runs whose handle() has started and whose end is not reported yet,
    by job id and lease token (a job retried at once may be claimed again before its last
    run's task has ended). The heartbeat publishes it: the dashboard shows how long each has run.
    """

    def __init__(
        self,
        worker_id: str,
        *,
        hooks: Hooks | None = None,
        observers: Sequence[Observer] = (),
        tracer: JobTracer | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.hooks = hooks
        self.observers = list(observers)
        self.tracer = tracer
        self.running: dict[tuple[str, str], JobContext] = {}

    def _context(self, claimed: ClaimedJob, job: Job | None) -> JobContext:
        return JobContext(
            worker_id=self.worker_id,
            queue=claimed.queue,
            job_id=claimed.id,
            name=job.name if job is not None else claimed.name.decode("utf-8", "replace"),
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            job=job,
        )

    async def run(self, claimed: ClaimedJob, job: Job, handler: Handler, chain: Chain = ()) -> Outcome:
        """Run `handler(job, ctx, chain)` (runner.run_handler: handle() inside the middleware
        `chain`) with the before hooks, the observers and a tracing span around it."""
        tracer = self.tracer
        traced = tracer is not None and tracer.active
        if self.hooks is None and not self.observers and not traced:
            if not chain:
                return await handler(job)  # nothing listens, nothing wraps: cost nothing
            ctx = self._context(claimed, job)  # for the middleware alone
            ctx.started_ms = now_ms()
            return await handler(job, ctx, chain)
        ctx = self._context(claimed, job)
        ctx.started_ms = now_ms()
        self.running[claimed.id, claimed.token] = ctx
        for observer in self.observers:
            try:
                observer.job_started(ctx)
            except Exception:
                log.exception("observer %r failed on job %s", observer, claimed.id)
        if self.hooks is not None:
            await self.hooks.run_before(ctx)
        started = time.perf_counter()
        try:
            if traced:
                assert tracer is not None
                outcome = await tracer.trace(ctx, lambda: handler(job, ctx, chain))
            else:
                outcome = await handler(job, ctx, chain)  # no span to make: no wrapper either
        finally:
            ctx.duration = time.perf_counter() - started
        ctx.error = outcome.error
        return outcome

    async def ended(
        self,
        claimed: ClaimedJob,
        result: Result,
        job: Job | None = None,
        error: BaseException | None = None,
    ) -> None:
        """The run's result is known: tell the observers, then run the hooks."""
        if self.hooks is None and not self.observers:
            self.running.pop((claimed.id, claimed.token), None)
            return
        ctx = self.running.pop((claimed.id, claimed.token), None)
        ran = ctx is not None
        if ctx is None:
            ctx = self._context(claimed, job)
        ctx.result = result
        if error is not None:
            ctx.error = error
        self._tell_ended(ctx)
        if ran and self.hooks is not None:
            await self.hooks.run_after(ctx)

    def forget(self, claimed: ClaimedJob) -> None:
        """The run's task ended before its result was reported: tell the observers it was lost.

        The hooks are not run: the task can no longer await them.
        """
        ctx = self.running.pop((claimed.id, claimed.token), None)
        if ctx is not None:
            ctx.result = "lost"
            self._tell_ended(ctx)

    def _tell_ended(self, ctx: JobContext) -> None:
        for observer in self.observers:
            try:
                observer.job_ended(ctx)
            except Exception:
                log.exception("observer %r failed on job %s", observer, ctx.job_id)

    def reclaimed(self, queue: str, requeued: Sequence[str], failed: Sequence[str]) -> None:
        if not requeued and not failed:
            return
        for observer in self.observers:
            try:
                observer.jobs_reclaimed(queue, requeued, failed)
            except Exception:
                log.exception("observer %r failed on reclaimed jobs of %s", observer, queue)

    async def serve(self, view: WorkerView) -> None:
        """The observers' background work, for the worker's life. Never raises."""
        if not self.observers:
            return
        async with anyio.create_task_group() as tg:
            for observer in self.observers:
                tg.start_soon(self._serve_one, observer, view)

    async def _serve_one(self, observer: Observer, view: WorkerView) -> None:
        try:
            await observer.serve(view)
        except Exception:
            log.exception("observer %r stopped", observer)


def observers_for(
    engine: WorkerEngine, metrics: Observer | None, telemetry: bool | Observer
) -> list[Observer]:
    """A worker's observers: `telemetry` (True: the engine's default observers, if it offers
    any through a `default_observers()` method; a Redis engine's is its event stream), then
    `metrics`. The worker never names an engine's telemetry class."""
    observers: list[Observer] = []
    if isinstance(telemetry, Observer):
        observers.append(telemetry)
    elif telemetry:
        offered: Callable[[], Sequence[Observer]] | None = getattr(engine, "default_observers", None)
        if offered is not None:
            observers.extend(offered())
    if metrics is not None:
        observers.append(metrics)
    return observers


def now_ms() -> int:
    return time.time_ns() // 1_000_000
