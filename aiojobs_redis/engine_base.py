"""What every engine offers `Job.dispatch()`, and what a worker needs of its engine.

`WorkerEngine` is the seam between the worker and a storage engine: RedisEngine implements
it, `aiojobs_redis.testing.FakeEngine` does in memory, and another database can. Every call
is one state transition on the engine's side, fenced by the lease token a claim handed out:
a call about a run this worker no longer holds changes nothing and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import Settings
    from .job import Job
    from .records import Claim, ClaimedJob, Reaped


class Engine(Protocol):
    settings: Settings

    async def dispatch(self, job: Job, *, durable: bool | None = None) -> str:
        """Store `job` (or, for the sync engine, run it) and return its id.

        `durable=True` also waits for replicas (RedisEngine; see durable.py); None follows
        the `durable` setting. An engine without replicas ignores it.
        """
        ...

    async def dispatch_many(self, jobs: Sequence[Job], *, durable: bool | None = None) -> list[str]:
        """Store (or run) many jobs; return their ids in order. `durable` as for dispatch()."""
        ...

    async def aclose(self) -> None: ...


class WorkerEngine(Engine, Protocol):
    """Every call a Worker makes. Times are integer milliseconds on the engine's clock.

    Errors: an engine that cannot be reached, or refuses, raises `EngineError` (the worker
    backs off and calls again); every call must be safe to repeat after such an error.
    """

    async def register_queues(self, queues: Iterable[str]) -> None:
        """Note that these queues exist (for listings); idempotent."""
        ...

    async def claim_many(
        self, requests: Sequence[tuple[str, int, str]], *, worker_id: str, lease_ms: int
    ) -> list[Claim]:
        """For each (queue, limit, request id): lease up to `limit` ready jobs to `worker_id`.

        A request id repeated by the same worker (its last claim got no answer) hands back
        what that claim took instead of claiming more.
        """
        ...

    async def ready_counts(self, queues: Sequence[str]) -> list[int]:
        """How many jobs are ready in each queue (a hint for sharing a claim)."""
        ...

    async def renew(self, queue: str, held: Sequence[tuple[str, str]], lease_ms: int) -> list[str]:
        """Extend the leases of (job id, token) pairs; return the ids no longer held."""
        ...

    async def aborted_runs(self, queue: str, held: Sequence[tuple[str, str]]) -> list[str]:
        """The ids of the (job id, token) runs in `held` that were aborted (the worker cancels
        them); a read, called once a second per queue while the worker runs jobs of it."""
        ...

    async def ack(self, job: ClaimedJob, *, result: bytes | None = None, keep_ms: int = 0) -> bool:
        """The run succeeded; False when the lease is no longer held. `result` (JSON) is kept
        for `keep_ms` when both are given (the class's keep_result), and its waiters told."""
        ...

    async def retry(self, job: ClaimedJob, delay_ms: int, error: dict[str, Any]) -> bool:
        """Run the job again after `delay_ms`, using an attempt; False when not held."""
        ...

    async def fail(
        self, job: ClaimedJob, error: dict[str, Any], *, count_attempt: bool = True, notify: bool = False
    ) -> bool:
        """Fail the job for good; False when not held. `notify`: the class keeps results, so
        waiters on its result are told at once."""
        ...

    async def release(self, job: ClaimedJob) -> bool:
        """Hand the job back to the head of its queue, unrun, using no attempt; False when not held."""
        ...

    async def defer(
        self, job: ClaimedJob, delay_ms: int, error: dict[str, Any], *, give_up_after_ms: int
    ) -> int:
        """Put the job back, unrun, to run again after `delay_ms`, using no attempt (no class is
        registered under its name here). 1 when deferred, 0 when not held, -1 (nothing changes)
        when it has been due for `give_up_after_ms` or longer: its scheduled time (the
        dispatch time of a job to run at once) is kept while it is deferred, to measure that.
        """
        ...

    async def throttle(self, job: ClaimedJob, retry_after_ms: int, max_throttles: int) -> int:
        """handle() raised RateLimited: put the job back at the head of its line, using no
        attempt, and start no job of its rate group (a job without one: of its queue) for
        `retry_after_ms`. 1 when done, 0 when not held, -1 (nothing changes) when it was
        throttled `max_throttles` times already: the caller counts the run as an attempt."""
        ...

    async def promote(self, queues: Sequence[str]) -> tuple[int, int]:
        """Make due delayed jobs ready: (how many, ms until the next is due or -1 for none)."""
        ...

    async def delayed_summary(self, queues: Sequence[str]) -> list[tuple[int, int]]:
        """For each queue: (delayed jobs, ms until the earliest is due, or -1 when none)."""
        ...

    async def reap(self, queue: str, *, max_stalls: int) -> Reaped:
        """Take back jobs whose lease lapsed: requeue them, or fail those that stalled too often."""
        ...

    async def wait_for_work(self, queues: Sequence[str], block_seconds: float) -> bool:
        """Return once work may be ready in `queues`, or after `block_seconds` (then False)."""
        ...

    async def set_progress(self, job: ClaimedJob, progress: bytes) -> bool:
        """Record the running job's progress (JSON); False (nothing changes) when not held."""
        ...
