"""Lifecycle hooks: your code before and after each job, and when one fails.

    from aiojobs_redis.hooks import Hooks, JobContext

    hooks = Hooks()

    @hooks.before
    async def note_start(ctx: JobContext) -> None:
        ctx.state["db"] = await pool.acquire()

    @hooks.after
    async def note_end(ctx: JobContext) -> None:
        await pool.release(ctx.state.pop("db"))

    @hooks.on_failure
    def alert(ctx: JobContext) -> None:
        if ctx.result == "failed":          # no attempts left ("retried" when one is)
            page_someone(ctx.name, ctx.job_id, ctx.error)

    await Worker(engine, ["payments"], hooks=hooks).run()
    # or: Hooks(before=[note_start], after=[note_end], on_failure=[alert])

Hooks are plain functions or coroutine functions taking a `JobContext`. `before` hooks run
before `handle()`; `after` hooks once the run's result is recorded in Redis, whatever it
was; `on_failure` hooks (before the `after` ones) when `handle()` raised or timed out. A hook
that raises, or runs past `timeout`, is logged with the job's id and skipped: it never
changes what happens to the job. Hooks run where the job runs, so a slow hook holds one of
the worker's `concurrency` slots while it runs.

The worker reports the same moments to its observers (Prometheus metrics, the event stream
the dashboard reads), through `Lifecycle`, the one object `worker.py` talks to.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio

if TYPE_CHECKING:
    from .events import RedisTelemetry
    from .job import Job
    from .metrics import JobTracer, PrometheusMetrics
    from .records import ClaimedJob
    from .runner import Outcome
    from .worker import Worker

log = logging.getLogger(__name__)

Result = Literal["succeeded", "retried", "failed", "released", "lost"]
"""How one run of a job ended: done; failed with attempts left; failed for good; handed back
to its queue unfinished (the worker stopped); or the lease was lost and the outcome discarded."""

Hook = Callable[["JobContext"], Awaitable[None] | None]
H = TypeVar("H", bound=Hook)


@dataclass(slots=True, eq=False)
class JobContext:
    """One run of one job, as hooks and observers see it. Never holds the payload's text."""

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


class Hooks:
    """Your callbacks around each job. See the module docstring."""

    def __init__(
        self,
        *,
        before: Iterable[Hook] = (),
        after: Iterable[Hook] = (),
        on_failure: Iterable[Hook] = (),
        timeout: float | None = 30.0,
    ) -> None:
        self._before = list(before)
        self._after = list(after)
        self._on_failure = list(on_failure)
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"<Hooks before={len(self._before)} after={len(self._after)} "
            f"on_failure={len(self._on_failure)} timeout={self.timeout}>"
        )

    def before(self, hook: H) -> H:
        """Register `hook` to run before each job's handle() (usable as a decorator)."""
        self._before.append(hook)
        return hook

    def after(self, hook: H) -> H:
        """Register `hook` to run after each job's result is recorded (usable as a decorator)."""
        self._after.append(hook)
        return hook

    def on_failure(self, hook: H) -> H:
        """Register `hook` to run when a job's handle() fails (usable as a decorator)."""
        self._on_failure.append(hook)
        return hook

    async def run_before(self, ctx: JobContext) -> None:
        await self._run_all("before", self._before, ctx)

    async def run_after(self, ctx: JobContext) -> None:
        if ctx.failed:
            await self._run_all("on_failure", self._on_failure, ctx)
        await self._run_all("after", self._after, ctx)

    async def _run_all(self, kind: str, hooks: Sequence[Hook], ctx: JobContext) -> None:
        for hook in hooks:
            await self._call(kind, hook, ctx)

    async def _call(self, kind: str, hook: Hook, ctx: JobContext) -> None:
        name = getattr(hook, "__qualname__", repr(hook))
        try:
            with anyio.move_on_after(self.timeout if self.timeout is not None else float("inf")) as scope:
                returned = hook(ctx)
                if inspect.isawaitable(returned):
                    await returned
        except Exception:
            log.exception(
                "%s hook %s raised for job %s %s (queue %s, attempt %d); the job is unaffected",
                kind,
                name,
                ctx.job_id,
                ctx.name,
                ctx.queue,
                ctx.attempt,
            )
            return
        if scope.cancelled_caught:
            log.error(
                "%s hook %s ran past %s s for job %s %s (queue %s, attempt %d); cancelled",
                kind,
                name,
                self.timeout,
                ctx.job_id,
                ctx.name,
                ctx.queue,
                ctx.attempt,
            )


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

    async def serve(self, worker: Worker) -> None:
        """Background work while `worker` runs (flushing buffers, polling)."""


class Lifecycle:
    """What the worker reports about each job, passed on to the hooks and the observers.

    `running` holds the runs whose handle() has started and whose end is not reported yet,
    by job id and lease token (a job retried at once may be claimed again before its last
    run's task has ended). The heartbeat publishes it: the dashboard shows how long each has run.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        hooks: Hooks | None = None,
        observers: Sequence[Observer] = (),
        tracer: JobTracer | None = None,
    ) -> None:
        self.worker = worker
        self.hooks = hooks
        self.observers = list(observers)
        self.tracer = tracer
        self.running: dict[tuple[str, str], JobContext] = {}

    @classmethod
    def for_worker(
        cls,
        worker: Worker,
        *,
        hooks: Hooks | None,
        metrics: PrometheusMetrics | None,
        telemetry: bool | RedisTelemetry,
        tracing: bool,
    ) -> Lifecycle:
        """Hooks and observers for `worker`; `telemetry` is True (the defaults) or a RedisTelemetry."""
        from .events import RedisTelemetry
        from .metrics import JobTracer

        observers: list[Observer] = []
        if isinstance(telemetry, RedisTelemetry):
            observers.append(telemetry)
        elif telemetry:
            observers.append(RedisTelemetry())
        if metrics is not None:
            observers.append(metrics)
        return cls(
            worker,
            hooks=hooks,
            observers=observers,
            tracer=JobTracer.if_available() if tracing else None,
        )

    def _context(self, claimed: ClaimedJob, job: Job | None) -> JobContext:
        return JobContext(
            worker_id=self.worker.worker_id,
            queue=claimed.queue,
            job_id=claimed.id,
            name=job.name if job is not None else claimed.name.decode("utf-8", "replace"),
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            job=job,
        )

    async def run(
        self, claimed: ClaimedJob, job: Job, handler: Callable[[Job], Awaitable[Outcome]]
    ) -> Outcome:
        """Run `handler(job)` with the before hooks, the observers and a tracing span around it."""
        tracer = self.tracer
        traced = tracer is not None and tracer.active
        if self.hooks is None and not self.observers and not traced:
            return await handler(job)  # nothing listens: cost nothing
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
                outcome = await tracer.trace(ctx, lambda: handler(job))
            else:
                outcome = await handler(job)  # no span to make: no wrapper either
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
        """The run's result is recorded: tell the observers, then run the hooks."""
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
        """The run's task ended; if no result was reported, its outcome is unknown: lost."""
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

    async def serve(self) -> None:
        """The observers' background work, for the worker's life. Never raises."""
        if not self.observers:
            return
        async with anyio.create_task_group() as tg:
            for observer in self.observers:
                tg.start_soon(self._serve_one, observer)

    async def _serve_one(self, observer: Observer) -> None:
        try:
            await observer.serve(self.worker)
        except Exception:
            log.exception("observer %r stopped", observer)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
