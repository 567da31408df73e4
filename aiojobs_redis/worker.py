"""The worker supervisor: claims jobs and runs their handle() coroutines under a limit.

Tasks, all in one anyio task group:
  fetcher   claims batches while there is free capacity; waits for work when idle
  promoter  moves due delayed jobs to ready, sleeping until the next one is due
  scheduler fires the ticks of the schedules of the queues served (scheduler.py); only
            started when an imported Job class declares a schedule for one of them
  renewer   extends the leases of the jobs this worker runs
  aborts    once every `abort_check` s while jobs run here, asks which were aborted, and
            cancels those (nothing is sent while none runs)
  reaper    returns jobs whose lease lapsed (a dead or hung worker) to their queue
  telemetry the observers' side work (events, heartbeats, queue depths; see lifecycle.py)
  slots     up to `concurrency` long-lived tasks, each running claimed jobs one at a time
            (cheaper than a task per job); every job still runs in its own cancel scope,
            so exactly that job can be cancelled
Stopping (stop(), SIGTERM via the CLI, burst end, max jobs/time): claim nothing more, let
running jobs finish within the grace period, then cancel the rest and hand them back to
their queue without using an attempt. The side tasks stop last, so leases stay renewed.
How a run's end is recorded (done, lost, or abandoned in an outage): settle.py. The engine
is anything with the WorkerEngine methods (engine_base.py); its time is `clock`'s.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from . import limits, registry, schedules, sharding
from ._slots import SlotPool
from .clock import ANYIO_CLOCK, WorkerClock
from .context import use_engine
from .engine_base import WorkerEngine
from .errors import EngineError
from .hooks import Hooks
from .job import Job
from .keys import validate_queue
from .lifecycle import Lifecycle, Observer, WorkerCounters, WorkerView, observers_for
from .metrics import JobTracer, PrometheusMetrics
from .middleware import Chains, Middleware, middleware_tuple
from .records import ClaimedJob
from .retry import Backoff
from .runner import call_on_exhausted, run_handler
from .scheduler import Scheduler
from .settle import Settler, job_log, retrying
from .signals import drain_on_signal
from .timeparse import to_ms
from .typed_payloads import decode_job_payload

log = logging.getLogger(__name__)

PAUSED_RECHECK = 1.0  # s: a busy worker looks at a paused queue again this often


def default_worker_id() -> str:
    host = re.sub(r"[^A-Za-z0-9.\-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{random.randrange(36**4):04x}"


def default_queues() -> list[str]:
    """What a worker told no queues serves: the registered Job classes' queues, sorted.

    With no class registered, `default`, and a warning: the modules defining the jobs were
    probably not imported.
    """
    queues = registry.job_queues()
    if not queues:
        log.warning(
            "no Job classes are registered: serving the queue 'default'; import the modules "
            "that define your jobs before the worker starts"
        )
        return ["default"]
    return queues


@dataclass(slots=True, eq=False)
class _Running:
    job: ClaimedJob
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lease_lost: bool = False
    aborted: bool = False  # aborted (abort.py): cancelled, its end is already recorded
    handled: bool = False  # handle() has ended: only recording its outcome is left
    reported: bool = False  # its outcome is recorded (or it was found lost): nothing is left


__all__ = ["Backoff", "Worker", "WorkerCounters", "default_queues", "default_worker_id", "drain_on_signal"]


class Worker:
    """Runs the jobs of `queues`, in priority order (side by side with `fair=True`).

    `queues=None` serves default_queues(): every queue a registered Job class uses, side by
    side. `log_jobs=False` drops the INFO line each finished job logs (logger
    ``aiojobs_redis.worker.jobs``); retries and failures are still logged. `middleware`
    runs around every job's handle(), outside the job class's own (see middleware.py).
    """

    def __init__(
        self,
        engine: WorkerEngine,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 100,
        lease: float = 30.0,
        reap_interval: float = 5.0,
        max_stalls: int = 3,
        grace: float = 30.0,
        burst: bool = False,
        max_jobs: int | None = None,
        max_time: float | None = None,
        idle_wait: float = 5.0,
        promote_interval: float = 5.0,
        batch_size: int = 100,
        fair: bool = False,
        unknown_job_grace: float = 3600.0,
        worker_id: str | None = None,
        lookup: Callable[[str], type[Job]] = registry.lookup,
        hooks: Hooks | None = None,
        metrics: PrometheusMetrics | None = None,
        telemetry: bool | Observer = True,
        tracing: bool = True,
        clock: WorkerClock = ANYIO_CLOCK,
        log_jobs: bool = True,
        abort_check: float = 1.0,
        schedules: bool = True,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        if queues is None:
            # No queues given: the registered Job classes' queues, none preferred.
            queues, fair = default_queues(), True
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.engine = engine
        # Priority groups: one per queue given (a sharded queue with its shards, served
        # fairly), or one for all with fair=True. self.queues is every queue served.
        self._groups = sharding.expand([validate_queue(q) for q in queues], fair=fair)
        self.queues = [q for group in self._groups for q in group]
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be >= 1")
        self.concurrency = concurrency
        self.lease_ms = max(100, to_ms(lease, what="lease"))
        self.reap_interval = reap_interval
        self.max_stalls = max_stalls
        self.grace = grace
        self.burst = burst
        self.max_jobs = max_jobs
        self.max_time = max_time
        self.idle_wait = idle_wait
        self.promote_interval = promote_interval
        self.batch_size = batch_size
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self.log_jobs = log_jobs
        if not abort_check > 0:
            raise ValueError(f"abort_check must be > 0, not {abort_check!r}")
        self.abort_check = abort_check
        self.schedules_enabled = schedules
        self.scheduler: Scheduler | None = None  # set when run() starts, if there are schedules
        self._lookup = lookup
        self.middleware = middleware_tuple(middleware, "Worker(middleware=...)")
        self._chains = Chains(self.middleware)  # this worker's middleware + each class's
        self.counters = WorkerCounters()
        self._running: dict[str, _Running] = {}
        self._slot_freed = anyio.Event()
        self._promoter_poke = anyio.Event()
        self._stopping = False
        self._wait_scope: anyio.CancelScope | None = None
        self._request_seq = 0
        self._unanswered_claim: list[tuple[str, int, str]] | None = None
        # Queues not to claim from for now: queue -> (until, monotonic s; paused). A paused
        # queue is asked again after the next idle wait (or PAUSED_RECHECK while busy), one a
        # limit holds back when the limit allows (claim.lua says when).
        self._held: dict[str, tuple[float, bool]] = {}
        self._paused_seen: set[str] = set()  # queues found paused, for the log (sharded: by name)
        self._ended = 0  # jobs whose task has finished, for burst mode's last look
        # Claimed jobs go to an idle slot, else a new one (up to `concurrency`), else wait.
        self._slots = SlotPool[_Running](concurrency, self._run_job, name="aiojobs-slot")
        self.lifecycle = Lifecycle(
            self.worker_id,
            hooks=hooks,
            observers=observers_for(engine, metrics, telemetry),
            tracer=JobTracer.if_available() if tracing else None,
        )
        # A job of a name unknown here is deferred until due this long, then failed (settle.py).
        self._settler = Settler(
            engine,
            self.lifecycle,
            self.counters,
            lease_ms=self.lease_ms,
            clock=clock,
            unknown_job_grace_ms=to_ms(unknown_job_grace, what="unknown_job_grace"),
        )

    def __repr__(self) -> str:
        state = "stopping" if self._stopping else "running"
        return (
            f"<Worker {self.worker_id} queues={self.queues} {state} "
            f"running={len(self._running)}/{self.concurrency}>"
        )

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def running_count(self) -> int:
        return len(self._running)

    def view(self) -> WorkerView:
        """What observers see of this worker."""
        return WorkerView(
            self.worker_id, self.queues, self.concurrency, self.counters, self.lifecycle.running, self.engine
        )

    def stop(self) -> None:
        """Drain: claim nothing more, let running jobs finish within the grace period."""
        if not self._stopping:
            log.info("worker %s stopping: %d job(s) running", self.worker_id, len(self._running))
        self._stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        self._slot_freed.set()

    # -- the run loop -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Handlers that dispatch follow-up jobs use this worker's engine.
        with use_engine(self.engine):
            await self._run(task_status)

    async def _run(self, task_status: TaskStatus[None]) -> None:
        started = self.clock.monotonic()
        await self._retrying("register queues", lambda: self.engine.register_queues(self.queues))
        await self._retrying("declare queue limits", self._declare_limits)
        log.info(
            "worker %s serving %s, concurrency %d, lease %.1f s",
            self.worker_id,
            ",".join(self.queues),
            self.concurrency,
            self.lease_ms / 1000,
        )
        self.scheduler = self._scheduler()  # a bad declaration raises here, before any task
        async with anyio.create_task_group() as side:
            side.start_soon(self._renewer, name="aiojobs-renewer")
            side.start_soon(self._abort_watcher, name="aiojobs-aborts")
            side.start_soon(self._promoter, name="aiojobs-promoter")
            side.start_soon(self._reaper, name="aiojobs-reaper")
            if self.scheduler is not None:
                side.start_soon(self.scheduler.run, name="aiojobs-scheduler")
            side.start_soon(self.lifecycle.serve, self.view(), name="aiojobs-telemetry")
            if self.max_time is not None:
                side.start_soon(self._stop_after, self.max_time, name="aiojobs-max-time")
            try:
                async with anyio.create_task_group() as jobs:
                    self._slots.open(jobs)
                    task_status.started()
                    await self._fetch()
                    await self._drain()
                    self._slots.close()
            finally:
                self._settler.report_cut(self.worker_id)
            side.cancel_scope.cancel()
        log.info(
            "worker %s stopped after %.1f s: %s",
            self.worker_id,
            self.clock.monotonic() - started,
            self.counters.describe(),
        )

    async def _stop_after(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        self.stop()

    async def _fetch(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if self.max_jobs is not None:
                left = self.max_jobs - self.counters.claimed
                if left <= 0:
                    log.info("worker %s reached max jobs (%d)", self.worker_id, self.max_jobs)
                    return
                free = min(free, left)
            if free <= 0:
                await self._wait_for_slot()
                continue
            try:
                ended_before = self._ended
                got, more = await self._claim_round(min(free, self.batch_size))
                if got == 0 and not more:
                    if not self.burst:
                        await self._interruptible(self.engine.wait_for_work(self.queues, self._idle_block()))
                        self._held = {q: held for q, held in self._held.items() if not held[1]}
                    elif self._idle_block() < self.idle_wait:
                        await self._interruptible(self.clock.sleep(self._idle_block()))  # a limit's wait
                    elif await self._burst_done(ended_before):
                        log.info(
                            "worker %s: no ready jobs left (burst)%s%s",
                            self.worker_id,
                            self._left_paused(),
                            await self._left_delayed(),
                        )
                        return
                backoff.reset()
            except EngineError as exc:
                delay = backoff.next_delay()
                log.warning("claiming failed (%s); retrying in %.2f s", exc, delay)
                await self._interruptible(self.clock.sleep(delay))

    async def _claim_round(self, wanted: int) -> tuple[int, bool]:
        """Claim up to `wanted` jobs in one round trip, from the queues in order of priority.

        With several queues, a count of each queue's ready jobs first decides how many to
        take from which, so a busy high-priority queue is not over-claimed from the others;
        queues of one group (a sharded queue's shards) share fairly (sharding.plan_claims).
        """
        if self._unanswered_claim is not None:
            # The last claim got no reply: ask again with the same request ids, so that the
            # engine hands back what it took instead of leaving it to lapse unrun.
            requests = self._unanswered_claim
        else:
            requests = await self._plan_claim(wanted)
            if not requests:
                if not self._held:
                    self._promoter_poke.set()  # woken for nothing ready: maybe a new delayed job
                return 0, False
        self._unanswered_claim = requests
        claims = await self.engine.claim_many(requests, worker_id=self.worker_id, lease_ms=self.lease_ms)
        self._unanswered_claim = None
        got, more = 0, False
        for (queue, limit, _), claim in zip(requests, claims, strict=True):
            self._note_pause(queue, claim.paused)
            if claim.paused:
                self._held[queue] = (self.clock.monotonic() + min(self.idle_wait, PAUSED_RECHECK), True)
                # Its share of this round is lost: plan again at once, for the other queues.
                more = True
            elif claim.wait_ms >= 0:
                self._held[queue] = (self.clock.monotonic() + claim.wait_ms / 1000, False)
                # A limit let it take less than its share: the rest goes to the other queues.
                more = more or len(claim.jobs) < limit
            for item in claim.quarantined:
                self.counters.quarantined += 1
                log.error("%s", item.describe(queue))
            if claim.next_due_ms >= 0 and not claim.jobs:
                self._promoter_poke.set()
            for job in claim.jobs:
                running = self._running[job.id] = _Running(job)
                self._slots.hand_over(running)
            self.counters.claimed += len(claim.jobs)
            got += len(claim.jobs)
            more = more or claim.more
        return got, more

    def _note_pause(self, queue: str, paused: bool) -> None:
        """Log when a queue (a sharded one once, not per shard) is found paused, and resumed."""
        name = queue.partition(sharding.SEPARATOR)[0]
        if paused and name not in self._paused_seen:
            self._paused_seen.add(name)
            log.info("worker %s: queue %s is paused; its jobs wait until it is resumed", self.worker_id, name)
        elif not paused and name in self._paused_seen:
            self._paused_seen.discard(name)
            log.info("worker %s: queue %s was resumed", self.worker_id, name)

    async def _plan_claim(self, wanted: int) -> list[tuple[str, int, str]]:
        """(queue, limit, request id) for each queue to claim from in this round."""
        queues = self.queues
        if self._held:
            now = self.clock.monotonic()
            self._held = {q: held for q, held in self._held.items() if held[0] > now}
            queues = [q for q in queues if q not in self._held]
        if len(self.queues) == 1:
            plan = [(queues[0], wanted)] if queues else []
        elif not queues:
            plan = []
        else:
            ready = dict(zip(queues, await self.engine.ready_counts(queues), strict=True))
            plan = sharding.plan_claims(self._groups, ready, wanted, self._request_seq)
        requests = []
        for queue, limit in plan:
            self._request_seq += 1
            requests.append((queue, limit, str(self._request_seq)))
        return requests

    def _idle_block(self) -> float:
        """How long to wait for work: idle_wait, or less when a limit lets a queue go sooner."""
        limited = [until for until, paused in self._held.values() if not paused]
        if not limited:
            return self.idle_wait
        return max(0.001, min(self.idle_wait, min(limited) - self.clock.monotonic()))

    async def _burst_done(self, ended_before: int) -> bool:
        """Burst mode ends when nothing runs here and no job is ready or due now.

        While jobs still run, wait for one to end: it may be retried into the queue. A job
        that ended during the last claim may have been retried after the claim looked.
        """
        if self._running:
            self._slot_freed = anyio.Event()
            await self._slot_freed.wait()
            return False
        if self._ended != ended_before:
            return False
        moved, next_due = await self.engine.promote(self.queues)
        if moved or next_due == 0:
            return False
        # The promoter or the reaper may have made jobs ready after the claim looked: this
        # promote then finds nothing to move, but the jobs are there. A paused queue's wait.
        open_queues = [q for q in self.queues if not self._held.get(q, (0, False))[1]]
        return not open_queues or not any(await self.engine.ready_counts(open_queues))

    def _left_paused(self) -> str:
        """The paused queues a burst leaves, e.g. " in the queues not paused; paused: imports"."""
        paused = {queue.partition(sharding.SEPARATOR)[0] for queue, (_, p) in self._held.items() if p}
        if not paused:
            return ""
        return f" in the queues not paused; paused (their jobs wait): {', '.join(sorted(paused))}"

    async def _left_delayed(self) -> str:
        """What a burst leaves behind, e.g. "; 1 delayed job remains in payments, next due in 1.8 s"."""
        try:
            summary = await self.engine.delayed_summary(self.queues)
        except EngineError as exc:
            return f"; delayed jobs could not be counted ({exc})"
        by_queue: dict[str, int] = {}
        for queue, (count, _) in zip(self.queues, summary, strict=True):
            if count:
                name = queue.partition(sharding.SEPARATOR)[0]  # a shard counts for its queue
                by_queue[name] = by_queue.get(name, 0) + count
        if not by_queue:
            return ""
        total = sum(by_queue.values())
        where = ", ".join(f"{queue} ({count})" for queue, count in by_queue.items())
        if len(by_queue) == 1:
            where = next(iter(by_queue))
        due = min(due for _, due in summary if due >= 0) / 1000
        jobs = "1 delayed job remains" if total == 1 else f"{total} delayed jobs remain"
        return f"; {jobs} in {where}, next due in {due:.1f} s"

    async def _wait_for_slot(self) -> None:
        self._slot_freed = anyio.Event()
        if self._stopping or len(self._running) < self.concurrency:
            return
        await self._slot_freed.wait()

    async def _interruptible(self, waiting: Awaitable[object]) -> None:
        """Await `waiting` (an idle wait or a backoff), cut short by stop()."""
        with anyio.CancelScope() as scope:
            self._wait_scope = scope
            if self._stopping:
                scope.cancel()
            try:
                await waiting
            finally:
                self._wait_scope = None

    async def _drain(self) -> None:
        if not self._running:
            return
        log.info(
            "worker %s draining %d job(s), grace %.1f s",
            self.worker_id,
            len(self._running),
            self.grace,
        )
        with self.clock.move_on_after(self.grace):
            while self._running:
                self._slot_freed = anyio.Event()
                await self._slot_freed.wait()
        for running in list(self._running.values()):
            running.scope.cancel()  # their tasks hand the jobs back to the queue

    # -- one job ----------------------------------------------------------------------------

    async def _run_job(self, running: _Running) -> None:
        claimed = running.job
        try:
            try:
                job = self._materialise(claimed)
            except Exception as exc:  # never let one record take the worker down
                await self._settler.unrunnable(claimed, exc)
                running.reported = True
                return
            # Timed only when the line is wanted: a check of the logger's level costs nothing.
            started = self.clock.monotonic() if self.log_jobs and job_log.isEnabledFor(logging.INFO) else None
            with running.scope:
                outcome = await self.lifecycle.run(claimed, job, run_handler, self._chains[type(job)])
            running.handled = True
            if running.aborted:  # recorded by abort itself, whether handle() heeded the cancel
                await self._settler.aborted(claimed)
                running.reported = True
                return
            if running.scope.cancelled_caught:
                await self._settler.cancelled(claimed, lease_lost=running.lease_lost)
                running.reported = True
                return
            exhausted = await self._settler.settle(claimed, job, outcome, started)
            running.reported = True
            if exhausted is not None:
                await self._exhausted(running, job, exhausted)
        finally:
            # The job may already be claimed again (a retry with no delay): leave that run's entry.
            if self._running.get(claimed.id) is running:
                del self._running[claimed.id]
            if not running.reported:  # cut short (the worker was cancelled): lost, said once in _run
                self._settler.cut(claimed)
            self._ended += 1
            self._slot_freed.set()

    async def _exhausted(self, running: _Running, job: Job, error: BaseException) -> None:
        """Run on_exhausted() after the failure is recorded, in a scope the drain cancels."""
        scope = anyio.CancelScope()
        if running.scope.cancel_called:  # the drain came by while the failure was recorded
            scope.cancel()
        running.scope = scope
        with scope:
            await call_on_exhausted(job, error)
        if scope.cancelled_caught:
            log.warning("job %s %s: on_exhausted() cut short, the worker is stopping", job.id, job.name)

    def _materialise(self, claimed: ClaimedJob) -> Job:
        """The Job instance for a claimed record; the name is looked up, never imported."""
        cls = self._lookup(claimed.name.decode("utf-8"))
        job = cls(decode_job_payload(cls, claimed.payload))
        job.id, job.attempt = claimed.id, claimed.attempt
        job._lease = (self, claimed)  # for set_progress(), fenced by the token
        return job

    async def _declare_limits(self) -> None:
        """Write the QueueLimits declared for the queues served into their control hashes."""
        to_write = limits.controls_to_write(self.queues)
        declare = getattr(self.engine, "declare_controls", None)
        if not to_write or declare is None:
            return
        for queue, (part, fields) in to_write.items():
            if await declare(queue, fields):
                log.info("queue %s: limits from the code set: %s", queue, limits.describe_part(queue, part))

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[object]], deadline: float = math.inf
    ) -> object:
        return await retrying(self.clock, what, call, deadline)

    # -- side tasks -------------------------------------------------------------------------

    async def _renewer(self) -> None:
        interval = self.lease_ms / 3000
        while True:
            await self.clock.sleep(interval)
            for queue, held in self._held_by_queue().items():
                try:
                    lost = await self.engine.renew(queue, held, self.lease_ms)
                except Exception as exc:  # the engine is away: the next round tries again
                    log.warning("renewing leases in %s failed: %s", queue, exc)
                    continue
                if lost:  # an abort revokes the lease too: say aborted, not lost
                    await self._look_for_aborts(queue, [(job_id, dict(held)[job_id]) for job_id in lost])
                self._leases_lost(lost, dict(held))

    def _held_by_queue(self) -> dict[str, list[tuple[str, str]]]:
        by_queue: dict[str, list[tuple[str, str]]] = {}
        for running in self._running.values():
            by_queue.setdefault(running.job.queue, []).append((running.job.id, running.job.token))
        return by_queue

    async def _abort_watcher(self) -> None:
        """Cancel the runs aborted elsewhere: one read per queue with jobs running here, each
        `abort_check` s; a worker running nothing sends nothing."""
        while True:
            await self.clock.sleep(self.abort_check)
            for queue, held in self._held_by_queue().items():
                await self._look_for_aborts(queue, held)

    async def _look_for_aborts(self, queue: str, held: list[tuple[str, str]]) -> None:
        try:
            aborted = await self.engine.aborted_runs(queue, held)
        except Exception as exc:  # the engine is away: the next round tries again
            log.warning("looking for aborted jobs in %s failed: %s", queue, exc)
            return
        sent = dict(held)
        for job_id in aborted:
            holder = self._running.get(job_id)
            if (
                holder is not None
                and holder.job.token == sent[job_id]
                and not holder.handled
                and not holder.lease_lost
            ):
                holder.aborted = True
                holder.scope.cancel()
                log.info("job %s in %s: aborted; cancelling", job_id, queue)

    def lease_refused(self, claimed: ClaimedJob) -> None:
        """A call of the running job (set_progress) found its lease gone: as a renewal would."""
        self._leases_lost([claimed.id], {claimed.id: claimed.token})

    def _leases_lost(self, lost: Sequence[str], sent: dict[str, str]) -> None:
        for job_id in lost:
            holder = self._running.get(job_id)
            # A late reply may be about an earlier run of a job this worker runs again,
            # or about a run whose outcome was recorded since (its settle call says).
            if (
                holder is not None
                and holder.job.token == sent[job_id]
                and not holder.lease_lost
                and not holder.aborted
                and not holder.handled
            ):
                holder.lease_lost = True
                holder.scope.cancel()
                log.warning("job %s: lease lost (another worker may run it); cancelling", job_id)

    async def _promoter(self) -> None:
        backoff = Backoff()
        while True:
            try:
                _moved, next_due = await self.engine.promote(self.queues)
                backoff.reset()
                wait = self.promote_interval if next_due < 0 else min(next_due / 1000, self.promote_interval)
            except EngineError as exc:
                wait = backoff.next_delay()
                log.warning("promoting delayed jobs failed (%s); retrying in %.2f s", exc, wait)
            self._promoter_poke = anyio.Event()
            with self.clock.move_on_after(wait):
                await self._promoter_poke.wait()

    def _scheduler(self) -> Scheduler | None:
        """The scheduler of the schedules declared for the queues served, if there are any."""
        if not self.schedules_enabled:
            return None
        declared = schedules.declared(registry.runnable(), self.queues)
        if not declared:
            return None
        if not hasattr(self.engine, "fire_schedules"):
            log.warning("this engine does not fire schedules: %d schedule(s) ignored", len(declared))
            return None
        log.info("worker %s fires %d schedule(s)", self.worker_id, len(declared))
        return Scheduler(self.engine, declared, self.clock, stopping=lambda: self._stopping)  # type: ignore[arg-type]

    async def _reaper(self) -> None:
        while True:
            for queue in self.queues:
                try:
                    reaped = await self.engine.reap(queue, max_stalls=self.max_stalls)
                except EngineError as exc:
                    log.warning("reaping %s failed: %s", queue, exc)
                    continue
                self.lifecycle.reclaimed(queue, reaped.requeued, reaped.failed)
                for job_id in reaped.requeued:
                    log.warning("job %s in %s: lease lapsed, returned to the queue", job_id, queue)
                for job_id in reaped.failed:
                    log.error("job %s in %s: stalled too often, moved to failed", job_id, queue)
                if reaped.trimmed:
                    log.warning(
                        "queue %s: %d failed job(s) dropped by retention (failed_ttl_ms, failed_max)",
                        queue,
                        reaped.trimmed,
                    )
            await self.clock.sleep(self.reap_interval)
