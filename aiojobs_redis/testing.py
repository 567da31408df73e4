"""Test your code without Redis: an in-memory engine and a clock that moves when told to.

    from aiojobs_redis.testing import FakeEngine

    async def test_signup_sends_a_welcome_email(fake_engine: FakeEngine) -> None:
        await signup("ada@example.com")                       # calls SendWelcome().dispatch(...)
        assert fake_engine.dispatched_payloads(SendWelcome) == [{"to": "ada@example.com"}]
        assert await fake_engine.run_due() == 1               # runs it, as a worker would

`FakeEngine` stores jobs in memory, records every dispatch, and implements what a Worker
needs of an engine, so a real Worker (or `run_due()`, a burst worker over the fake) runs
the jobs with the same retry, delay and failure rules. Delays and retry waits follow a
`FakeClock`: `clock.advance(seconds)`, then `run_due()` again.

The `fake_engine` and `fake_clock` fixtures come with `pytest_plugins = ["aiojobs_redis.testing"]`
in your conftest.py; `fake_engine` is installed as the engine `Job.dispatch()` uses.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import context, flow, sharding
from .abort import abort_error
from .clock import Changes, FakeClock
from .config import Settings
from .errors import DuplicateJob, EngineUnavailable, JobAborted, JobFailed, JobNotFound
from .groups import group_of
from .ids import new_job_id
from .job import Job
from .keys import validate_queue
from .records import Claim, ClaimedJob, Reaped
from .testing_flows import FakeFlows
from .typed_payloads import decode_job_payload, encode_job_payload
from .unique import lock_suffix
from .worker import Worker

__all__ = ["Dispatched", "FakeClock", "FakeEngine", "FakeJob", "fake_clock", "fake_engine"]


@dataclass(frozen=True)
class Dispatched:
    """One dispatch, as the code under test made it. `payload` is decoded JSON."""

    id: str
    job: type[Job]
    queue: str
    payload: Any
    delay_ms: int
    priority: int = 0


@dataclass(eq=False)
class FakeJob:
    """A job held by a FakeEngine. `state`: ready, delayed, running, waiting (a flow's job
    whose prerequisites have not all succeeded), done or failed."""

    id: str
    name: str
    queue: str
    payload: bytes = field(repr=False)
    max_attempts: int
    state: str = "ready"
    attempts: int = 0  # attempts used
    runs: int = 0
    stalls: int = 0
    token: str = ""
    lease_until_ms: int = 0
    due_ms: int = 0
    scheduled_ms: int = 0  # when it was due: kept while deferred (as field d in Redis)
    worker: str = ""
    error: dict[str, Any] | None = None
    settled_by: str = ""  # the last ack/retry/fail/release and its token: a replay succeeds
    lock: str = ""  # a unique job's lock suffix ("<name>:<key>"); "" for a plain job
    lock_until_start: bool = False
    progress: bytes | None = None  # JSON, from set_progress()
    result: bytes | None = None  # JSON, kept until result_until_ms (keep_result)
    result_until_ms: int = 0
    priority: int = 0  # its level: it waits in that level's line (field o in Redis)
    group: str = ""  # its rate group ("" for none); the fake applies no group limits
    throttles: int = 0  # times handle() raised RateLimited (field h in Redis)


class FakeEngine(FakeFlows):
    """An in-memory engine: `Job.dispatch()` and a Worker both work against it.

    Set `unavailable = True` to make every worker call raise EngineUnavailable (an outage);
    `take_lease(job_id)` makes a running job's lease another worker's. `calls` counts the
    calls by name; `until(predicate)` waits, without polling, until a call makes it true.

    It answers as RedisEngine and the Lua scripts do (ids, attempts used, shards, the order
    of claims across priority levels and within each, requeues and promotions, claim
    replays, token fences and settle replays), but keeps finished jobs in state "done" and
    failed ones for ever, and has no wake tokens, telemetry, retention trimming, rate limits
    or data-format version checks. `pause(queue)` holds a queue's jobs back as claim.lua does
    (the queues in `paused_queues`) until `resume(queue)`. Chains, batches and depends_on
    work as on Redis (testing_flows.py), and so does `failed_retry()`.
    """

    def __init__(self, clock: FakeClock | None = None, settings: Settings | None = None) -> None:
        self.clock = clock or FakeClock()
        self.settings = settings or Settings()
        self.dispatched: list[Dispatched] = []
        self.jobs: dict[str, FakeJob] = {}
        self.queues: set[str] = set()  # dispatched to, or registered by a worker
        self.paused_queues: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.unavailable = False
        # Ready jobs: queue -> priority level -> FIFO line (the level lists of claim.lua).
        self._ready: dict[str, dict[int, deque[FakeJob]]] = {}
        # Each worker's last claim per queue, as claim.lua keeps it: (request id, jobs, until ms).
        self._receipts: dict[tuple[str, str], tuple[str, list[ClaimedJob], int]] = {}
        self._router = sharding.Router()
        self._tokens = itertools.count(1)
        self._changed = Changes()
        self._aborted_runs: set[tuple[str, str]] = set()  # (id, token) of runs aborted while running
        self._locks: dict[str, str] = {}  # unique lock suffix -> the id of the job holding it
        self._successors: dict[str, tuple[Job, bytes, str]] = {}  # "replace" while running
        self._init_flows()

    def __repr__(self) -> str:
        return f"<FakeEngine jobs={len(self.jobs)} dispatched={len(self.dispatched)}>"

    # -- for tests --------------------------------------------------------------------------

    def dispatched_payloads(self, job: type[Job]) -> list[Any]:
        """The payloads of the jobs of class `job` dispatched so far, in order."""
        return [d.payload for d in self.dispatched if d.job is job]

    def in_state(self, state: str, queue: str | None = None) -> list[FakeJob]:
        return [j for j in self.jobs.values() if j.state == state and queue in (None, j.queue)]

    def take_lease(self, job_id: str) -> None:
        """Give a running job's lease to someone else: this worker's renew and settle fail."""
        self.jobs[job_id].token = f"other-{next(self._tokens)}"

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, re-checked after each engine call."""
        while not predicate():
            await self._changed.wait()

    async def run_due(
        self, queues: Iterable[str] | None = None, *, concurrency: int = 1, **worker: Any
    ) -> int:
        """Run every job ready now (and due delayed ones) with a burst Worker; return how many ran.

        Retries without a delay run in the same call; later ones wait for `clock.advance()`.
        """
        names = sorted(queues if queues is not None else self.queues or {"default"})
        runner = Worker(
            self, names, concurrency=concurrency, burst=True, clock=self.clock, telemetry=False, **worker
        )
        await runner.run()
        return runner.counters.claimed

    def _held(self, job: ClaimedJob, op: str) -> FakeJob | bool:
        """The job if this lease still holds it; else True when `op` already settled it with
        this token (a replayed call, as the Lua scripts answer), False when the lease is lost."""
        self._call("settle")
        held = self.jobs.get(job.id)
        if held is not None and held.state == "running" and held.token == job.token:
            held.token, held.worker, held.settled_by = "", "", f"{op} {job.token}"
            return held
        self._notify()
        return held is not None and held.settled_by == f"{op} {job.token}"

    def _call(self, name: str) -> None:
        if self.unavailable:
            raise EngineUnavailable("the fake engine is unavailable")
        self.calls[name] += 1

    def _notify(self) -> None:
        self._changed.notify()

    def _line(self, job: FakeJob) -> deque[FakeJob]:
        """The line `job` waits in when ready: its queue's, at its priority level."""
        return self._ready.setdefault(job.queue, {}).setdefault(job.priority, deque())

    def _lines(self, queue: str) -> list[deque[FakeJob]]:
        """The queue's non-empty lines in the order claims take them: highest level first."""
        levels = self._ready.get(queue, {})
        return [levels[n] for n in sorted(levels, reverse=True) if levels[n]]

    def _waiting(self, queue: str) -> int:
        return sum(len(line) for line in self._lines(queue))

    def _enqueue(self, job: FakeJob, delay_ms: int, *, head: bool = False) -> None:
        if delay_ms > 0:
            job.state, job.due_ms = "delayed", self.clock.now_ms + delay_ms
        else:
            job.state = "ready"
            (self._line(job).appendleft if head else self._line(job).append)(job)
        self._notify()

    # -- Engine: dispatch -------------------------------------------------------------------

    async def dispatch(self, job: Job, *, durable: bool | None = None) -> str:
        return (await self.dispatch_many([job]))[0]

    async def dispatch_many(
        self, jobs: Sequence[Job], *, chunk: int = 500, durable: bool | None = None
    ) -> list[str]:
        """As RedisEngine's: every dispatch stores a new job (a new id, even for a Job instance
        dispatched before) unless a live job holds its unique key (then on_duplicate decides,
        as dispatch_ex.lua does), and a sharded queue's jobs go to its shards in turn. `chunk` and
        `durable` are accepted and change nothing here: the fake stores all at once."""
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        # Validated and encoded before anything is stored, as RedisEngine does.
        encoded = [encode_job_payload(job, self.settings.max_payload_bytes) for job in jobs]
        locks = [lock_suffix(j, data) if j.unique else "" for j, data in zip(jobs, encoded, strict=True)]
        for job, data in zip(jobs, encoded, strict=True):
            group_of(job, data)  # a bad group key raises before anything is stored
        prepared = [
            (validate_queue(self._router.route(job, lock)), data, lock)
            for job, data, lock in zip(jobs, encoded, locks, strict=True)
        ]
        ids = []
        for job, (queue, data, lock) in zip(jobs, prepared, strict=True):
            holder = self.jobs.get(self._locks.get(lock, "")) if lock else None
            if holder is not None and holder.state in ("ready", "delayed", "running"):
                ids.append(self._duplicate(job, holder, data))
                continue
            ids.append(self._store(job, queue, data, new_job_id(), lock))
        return ids

    def _store(self, job: Job, queue: str, data: bytes, job_id: str, lock: str) -> str:
        self._enqueue(self._record(job, queue, data, job_id, lock), job.effective_delay_ms)
        return job_id

    def _record(self, job: Job, queue: str, data: bytes, job_id: str, lock: str) -> FakeJob:
        """A new job, recorded as dispatched; the caller puts it in its line (or not)."""
        job.id = job_id
        job.duplicate = False
        stored = self.jobs[job_id] = FakeJob(job_id, job.name, queue, data, job.attempts)
        stored.priority = job.effective_priority
        stored.group = group_of(job, data)
        if lock:
            stored.lock, stored.lock_until_start = lock, job.unique_until == "start"
            self._locks[lock] = job_id
        delay_ms = job.effective_delay_ms
        stored.scheduled_ms = self.clock.now_ms + delay_ms
        payload = decode_job_payload(type(job), data)
        self.dispatched.append(Dispatched(job_id, type(job), queue, payload, delay_ms, stored.priority))
        self.queues.add(stored.queue)
        return stored

    def _duplicate(self, job: Job, holder: FakeJob, data: bytes) -> str:
        """A unique job whose key `holder` holds: as dispatch_ex.lua answers."""
        job.id, job.duplicate = holder.id, True
        if job.on_duplicate == "error":
            raise DuplicateJob(holder.id, holder.lock)
        if job.on_duplicate == "replace" and holder.state == "running":
            self._successors[holder.lock] = (job, data, holder.queue)
        elif job.on_duplicate == "replace":
            holder.payload = data
            if holder.state == "delayed":
                holder.due_ms = self.clock.now_ms + max(job.effective_delay_ms, 0)
        return holder.id

    def _finish(self, job: FakeJob, outcome: str) -> None:
        """The job reached a final state ("done", "failed" or "aborted"): as finish() in the
        Lua prelude."""
        self._end_flow(job.id, outcome)
        if not job.lock:
            return
        if self._locks.get(job.lock) == job.id:
            del self._locks[job.lock]
        successor = self._successors.pop(job.lock, None)
        if successor is not None:
            new, data, queue = successor
            self._store(new, queue, data, new_job_id(), job.lock)

    async def aclose(self) -> None:
        return None

    # -- WorkerEngine -----------------------------------------------------------------------

    async def register_queues(self, queues: Iterable[str]) -> None:
        self._call("register_queues")
        self.queues.update(queues)

    async def claim_many(
        self, requests: Sequence[tuple[str, int, str]], *, worker_id: str, lease_ms: int
    ) -> list[Claim]:
        self._call("claim")
        claims = []
        for queue, limit, request_id in requests:
            last = self._receipts.get((worker_id, queue))
            if last is not None and last[0] == request_id and last[2] > self.clock.now_ms:
                # The same claim again: what it took, still held (only the last one is kept).
                again = [c for c in last[1] if self._held_quietly(c)]
                claims.append(Claim(again, [], self._next_due(queue), False))
                continue
            if queue in self.paused_queues:  # as claim.lua: nothing claimed, the reply says so
                claims.append(Claim([], [], -1, False, paused=True))
                continue
            taken = list[ClaimedJob]()
            while (lines := self._lines(queue)) and len(taken) < limit:
                job = lines[0].popleft()
                job.state, job.token, job.worker = "running", str(next(self._tokens)), worker_id
                if job.lock_until_start and self._locks.get(job.lock) == job.id:
                    del self._locks[job.lock]
                job.runs += 1
                job.lease_until_ms = self.clock.now_ms + lease_ms
                taken.append(
                    ClaimedJob(
                        queue,
                        job.id,
                        job.token,
                        job.name.encode(),
                        job.payload,
                        job.attempts,
                        job.max_attempts,
                        job.runs,
                    )
                )
            if taken:  # as claim.lua: an empty claim leaves the last receipt, which lasts a lease
                self._receipts[worker_id, queue] = (request_id, taken, self.clock.now_ms + lease_ms)
            due = self._next_due(queue) if len(taken) < limit else -1
            claims.append(Claim(taken, [], due, bool(self._lines(queue))))
        self._notify()
        return claims

    def _held_quietly(self, claimed: ClaimedJob) -> bool:
        job = self.jobs.get(claimed.id)
        return job is not None and job.state == "running" and job.token == claimed.token

    def _next_due(self, queue: str) -> int:
        dues = [j.due_ms for j in self.jobs.values() if j.queue == queue and j.state == "delayed"]
        return max(0, min(dues) - self.clock.now_ms) if dues else -1

    async def ready_counts(self, queues: Sequence[str]) -> list[int]:
        self._call("ready_counts")
        return [self._waiting(q) for q in queues]

    async def renew(self, queue: str, held: Sequence[tuple[str, str]], lease_ms: int) -> list[str]:
        self._call("renew")
        lost = []
        for job_id, token in held:
            job = self.jobs.get(job_id)
            if job is not None and job.state == "running" and job.token == token:
                job.lease_until_ms = self.clock.now_ms + lease_ms
            else:
                lost.append(job_id)
        self._notify()
        return lost

    async def ack(self, job: ClaimedJob, *, result: bytes | None = None, keep_ms: int = 0) -> bool:
        """Leaves `attempts` (attempts used) as it was, as ack.lua does; the job stays in
        state "done" (Redis deletes it unless `keep_done_ms` is set). `result` is kept for
        `keep_ms` of the clock's time."""
        held = self.jobs.get(job.id)
        acked = self._settle(job, "done", attempts=0)
        if acked and held is not None and result is not None and keep_ms > 0 and held.result is None:
            held.result, held.result_until_ms = result, self.clock.now_ms + keep_ms
        return acked

    async def retry(self, job: ClaimedJob, delay_ms: int, error: dict[str, Any]) -> bool:
        held = self._held(job, "retry")
        if isinstance(held, bool):
            return held
        held.attempts += 1
        held.error = error
        held.scheduled_ms = self.clock.now_ms + delay_ms
        self._enqueue(held, delay_ms)
        return True

    async def defer(
        self, job: ClaimedJob, delay_ms: int, error: dict[str, Any], *, give_up_after_ms: int
    ) -> int:
        self._call("settle")
        held = self.jobs.get(job.id)
        if held is None or held.state != "running" or held.token != job.token:
            self._notify()
            return int(held is not None and held.settled_by == f"defer {job.token}")
        if self.clock.now_ms - held.scheduled_ms >= give_up_after_ms:
            return -1  # nothing changes, as defer.lua
        held.token, held.worker, held.settled_by = "", "", f"defer {job.token}"
        held.error = error
        held.state, held.due_ms = "delayed", self.clock.now_ms + delay_ms
        self._notify()
        return 1

    async def throttle(self, job: ClaimedJob, retry_after_ms: int, max_throttles: int) -> int:
        """As throttle.lua, but the fake has no rate limits: the job itself waits
        `retry_after_ms` (delayed; at the head of its queue when 0), using no attempt; -1
        (nothing changes) once it was throttled `max_throttles` times."""
        self._call("settle")
        held = self.jobs.get(job.id)
        if held is None or held.state != "running" or held.token != job.token:
            self._notify()
            return int(held is not None and held.settled_by == f"throttle {job.token}")
        if held.throttles >= max_throttles:
            return -1
        held.token, held.worker, held.settled_by = "", "", f"throttle {job.token}"
        held.throttles += 1
        self._enqueue(held, retry_after_ms, head=True)
        return 1

    async def fail(
        self, job: ClaimedJob, error: dict[str, Any], *, count_attempt: bool = True, notify: bool = False
    ) -> bool:
        return self._settle(job, "failed", error, attempts=1 if count_attempt else 0)

    async def abort(self, job_id: str, queue: str | None = None, *, reason: str | None = None) -> bool:
        """As RedisEngine.abort: a job not yet ended becomes failed with reason "aborted",
        using no attempt; a running one's lease is revoked and its worker cancels it."""
        self._call("abort")
        job = self.jobs.get(job_id)
        if job is None or job.state in ("done", "failed") or queue not in (None, job.queue):
            return False
        if job.state == "ready":
            self._line(job).remove(job)
        elif job.state == "running":
            self._aborted_runs.add((job.id, job.token))
            job.token, job.worker = "", ""
        job.state, job.error = "failed", abort_error(reason)
        self._finish(job, "aborted")
        self._notify()
        return True

    async def aborted_runs(self, queue: str, held: Sequence[tuple[str, str]]) -> list[str]:
        self._call("aborted_runs")
        return [job_id for job_id, token in held if (job_id, token) in self._aborted_runs]

    async def set_progress(self, job: ClaimedJob, progress: bytes) -> bool:
        self._call("set_progress")
        held = self.jobs.get(job.id)
        if held is None or held.state != "running" or held.token != job.token:
            return False
        held.progress = progress
        self._notify()
        return True

    async def progress(self, queue: str, job_id: str) -> Any:
        """As RedisEngine.progress (a job's progress stays after it is done, here)."""
        held = self.jobs.get(job_id)
        return None if held is None or held.progress is None else orjson.loads(held.progress)

    async def result(self, queue: str, job_id: str, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """As RedisEngine.result; `timeout` is in the fake clock's seconds."""
        with self.clock.move_on_after(math.inf if timeout is None else timeout):
            while True:
                held = self.jobs.get(job_id)
                if held is None or (held.state == "done" and held.result is None):
                    raise JobNotFound(f"job {job_id}: unknown, or ended with no result kept")
                if held.state == "done":
                    assert held.result is not None
                    if self.clock.now_ms >= held.result_until_ms:
                        raise JobNotFound(f"job {job_id}: its result is no longer kept")
                    return orjson.loads(held.result)
                if held.state == "failed" and (held.error or {}).get("reason") == "aborted":
                    raise JobAborted(job_id, (held.error or {}).get("message"))
                if held.state == "failed":
                    raise JobFailed(job_id, held.error)
                await self._changed.wait()
        raise TimeoutError(f"job {job_id} did not end within {timeout:g} s (it is left as it is)")

    async def release(self, job: ClaimedJob) -> bool:
        held = self._held(job, "release")
        if isinstance(held, bool):
            return held
        self._enqueue(held, 0, head=True)
        return True

    def _settle(
        self, job: ClaimedJob, state: str, error: dict[str, Any] | None = None, attempts: int = 1
    ) -> bool:
        held = self._held(job, "ack" if state == "done" else "fail")
        if isinstance(held, bool):
            return held
        held.state, held.attempts = state, held.attempts + attempts
        if error is not None:
            held.error = error
        self._finish(held, state)
        self._notify()
        return True

    async def promote(self, queues: Sequence[str]) -> tuple[int, int]:
        self._call("promote")
        due = sorted(
            (
                j
                for j in self.jobs.values()
                if j.state == "delayed" and j.queue in queues and j.due_ms <= self.clock.now_ms
            ),
            key=lambda j: (j.due_ms, j.id),  # the delayed zset's order
        )
        for job in due:
            self._enqueue(job, 0)
        dues = [self._next_due(q) for q in queues]
        return len(due), min([d for d in dues if d >= 0], default=-1)

    async def delayed_summary(self, queues: Sequence[str]) -> list[tuple[int, int]]:
        self._call("delayed_summary")
        delayed = Counter(j.queue for j in self.jobs.values() if j.state == "delayed")
        return [(delayed[queue], self._next_due(queue)) for queue in queues]

    async def reap(self, queue: str, *, max_stalls: int) -> Reaped:
        self._call("reap")
        requeued: list[FakeJob] = []
        failed = []
        lapsed = sorted(
            (
                j
                for j in self.jobs.values()
                if j.queue == queue and j.state == "running" and j.lease_until_ms <= self.clock.now_ms
            ),
            key=lambda j: (j.lease_until_ms, j.id),  # the running zset's order
        )
        for job in lapsed:
            job.stalls += 1
            job.token, job.worker = "", ""
            if job.stalls > max_stalls:
                job.state, job.error = "failed", {"reason": "stalled"}
                self._finish(job, "failed")
                failed.append(job.id)
            else:
                job.state = "ready"
                requeued.append(job)
        # At the head of their level's line, in the order their leases lapsed (as reap.lua
        # pushes them).
        for job in reversed(requeued):
            self._line(job).appendleft(job)
        self._notify()
        return Reaped([j.id for j in requeued], failed, 0)

    # -- flow control (flow.py) -----------------------------------------------------------

    async def pause(self, queue: str) -> bool:
        """As RedisEngine.pause: no claim takes jobs of `queue` (or its shards) until resume()."""
        self._call("pause")
        queues = self._with_shards(queue)
        paused = not set(queues) <= self.paused_queues
        self.paused_queues.update(queues)
        self.queues.update(queues)
        self._notify()
        return paused

    async def resume(self, queue: str) -> bool:
        """As RedisEngine.resume; a waiting worker looks at the queue again."""
        self._call("resume")
        queues = self._with_shards(queue)
        resumed = bool(self.paused_queues & set(queues))
        self.paused_queues.difference_update(queues)
        self._notify()
        return resumed

    async def paused(self, queues: Sequence[str]) -> list[bool]:
        self._call("paused")
        return [q in self.paused_queues for q in queues]

    def _with_shards(self, queue: str) -> list[str]:
        """The queue, its declared shards and the shards of it used so far."""
        known = sorted(q for q in self.queues if q.startswith(queue + sharding.SEPARATOR))
        return list(dict.fromkeys([*flow.queue_and_shards(queue), *known]))

    async def wait_for_work(self, queues: Sequence[str], block_seconds: float) -> bool:
        """Wakes for ready jobs of a queue not paused (Redis wakes for any dispatch: the
        worker then finds the queue paused and waits again)."""
        self._call("wait_for_work")
        with self.clock.move_on_after(block_seconds):
            while not any(self._lines(q) for q in queues if q not in self.paused_queues):
                await self._changed.wait()
            return True
        return False


try:
    import pytest
except ImportError:  # pragma: no cover - the fixtures are for pytest users only
    pass
else:

    @pytest.fixture
    def fake_clock() -> FakeClock:
        """A FakeClock starting at a fixed time."""
        return FakeClock()

    @pytest.fixture
    def fake_engine(fake_clock: FakeClock) -> Iterator[FakeEngine]:
        """A FakeEngine on `fake_clock`, installed as the engine `Job.dispatch()` uses."""
        engine = FakeEngine(fake_clock)
        context.install(engine)
        try:
            yield engine
        finally:
            context.uninstall(engine)
