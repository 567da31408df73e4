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

import contextlib
import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from . import context
from .codec import decode_payload, encode_payload
from .config import Settings
from .errors import EngineUnavailable, InvalidJobId
from .ids import new_job_id
from .job import Job
from .keys import validate_queue
from .records import Claim, ClaimedJob, Reaped
from .worker import Worker

__all__ = ["Dispatched", "FakeClock", "FakeEngine", "FakeJob", "fake_clock", "fake_engine"]


class _Changes:
    """Wake whoever waits for the next change (an anyio.Event made only when awaited)."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class FakeClock:
    """Milliseconds that move only when `advance()` says so.

    A worker's clock (pass `clock=`), a FakeEngine's, and a RedisEngine's (it is callable:
    the current time in ms). Sleepers and deadlines due by the new time wake on `advance()`.
    """

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now_ms = start_ms
        self._timers: list[tuple[int, int, Callable[[], None]]] = []  # (due ms, seq, fire)
        self._seq = itertools.count()
        self._changed = _Changes()

    def __repr__(self) -> str:
        return f"<FakeClock {self.now_ms} ms, {len(self._timers)} timer(s)>"

    def __call__(self) -> int:
        return self.now_ms

    def monotonic(self) -> float:
        return self.now_ms / 1000

    def advance(self, seconds: float) -> None:
        """Move time on and wake every sleeper and deadline due by then, earliest first."""
        self.now_ms += round(seconds * 1000)
        while self._timers and self._timers[0][0] <= self.now_ms:
            heapq.heappop(self._timers)[2]()

    def pending(self) -> list[float]:
        """Seconds from now until each pending sleep or deadline, soonest first."""
        return sorted((due - self.now_ms) / 1000 for due, _, _ in self._timers)

    async def wait_for_timer(self, seconds: float) -> None:
        """Return once something sleeps, or has a deadline, exactly `seconds` from now."""
        await self.until(lambda: round(seconds * 1000) / 1000 in self.pending())

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, re-checked each time a sleep or deadline is set."""
        while not predicate():
            await self._changed.wait()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        if math.isinf(seconds):
            await anyio.sleep_forever()
        woken = anyio.Event()
        timer = self._add(seconds, woken.set)
        try:
            await woken.wait()
        finally:
            self._remove(timer)

    @contextlib.contextmanager
    def move_on_after(self, seconds: float) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as scope:
            if seconds <= 0:
                scope.cancel()
                yield scope
                return
            if math.isinf(seconds):
                yield scope
                return
            timer = self._add(seconds, scope.cancel)
            try:
                yield scope
            finally:
                self._remove(timer)

    def _add(self, seconds: float, fire: Callable[[], None]) -> tuple[int, int, Callable[[], None]]:
        timer = (self.now_ms + max(1, round(seconds * 1000)), next(self._seq), fire)
        heapq.heappush(self._timers, timer)
        self._changed.notify()
        return timer

    def _remove(self, timer: tuple[int, int, Callable[[], None]]) -> None:
        with contextlib.suppress(ValueError):
            self._timers.remove(timer)
            heapq.heapify(self._timers)


@dataclass(frozen=True)
class Dispatched:
    """One dispatch, as the code under test made it. `payload` is decoded JSON."""

    id: str
    job: type[Job]
    queue: str
    payload: Any
    delay_ms: int


@dataclass(eq=False)
class FakeJob:
    """A job held by a FakeEngine. `state`: ready, delayed, running, done or failed."""

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
    worker: str = ""
    error: dict[str, Any] | None = None


class FakeEngine:
    """An in-memory engine: `Job.dispatch()` and a Worker both work against it.

    Set `unavailable = True` to make every worker call raise EngineUnavailable (an outage);
    `take_lease(job_id)` makes a running job's lease another worker's. `calls` counts the
    calls by name; `until(predicate)` waits, without polling, until a call makes it true.
    """

    def __init__(self, clock: FakeClock | None = None, settings: Settings | None = None) -> None:
        self.clock = clock or FakeClock()
        self.settings = settings or Settings()
        self.dispatched: list[Dispatched] = []
        self.jobs: dict[str, FakeJob] = {}
        self.queues: set[str] = set()  # dispatched to, or registered by a worker
        self.calls: Counter[str] = Counter()
        self.unavailable = False
        self._ready: dict[str, deque[FakeJob]] = {}
        self._receipts: dict[tuple[str, str, str], list[ClaimedJob]] = {}
        self._tokens = itertools.count(1)
        self._changed = _Changes()

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

    def _held(self, job: ClaimedJob) -> FakeJob | None:
        self._call("settle")
        held = self.jobs.get(job.id)
        return held if held is not None and held.state == "running" and held.token == job.token else None

    def _call(self, name: str) -> None:
        if self.unavailable:
            raise EngineUnavailable("the fake engine is unavailable")
        self.calls[name] += 1

    def _notify(self) -> None:
        self._changed.notify()

    def _queue(self, queue: str) -> deque[FakeJob]:
        ready = self._ready.get(queue)
        if ready is None:
            ready = self._ready[queue] = deque()
        return ready

    def _enqueue(self, job: FakeJob, delay_ms: int, *, head: bool = False) -> None:
        if delay_ms > 0:
            job.state, job.due_ms = "delayed", self.clock.now_ms + delay_ms
        else:
            job.state = "ready"
            (self._queue(job.queue).appendleft if head else self._queue(job.queue).append)(job)
        self._notify()

    # -- Engine: dispatch -------------------------------------------------------------------

    async def dispatch(self, job: Job, *, durable: bool | None = None) -> str:
        return (await self.dispatch_many([job]))[0]

    async def dispatch_many(self, jobs: Sequence[Job], *, durable: bool | None = None) -> list[str]:
        encoded = [encode_payload(job.payload, self.settings.max_payload_bytes) for job in jobs]
        ids = []
        for job, data in zip(jobs, encoded, strict=True):
            job_id = job.id or new_job_id()
            if job_id in self.jobs:
                raise InvalidJobId(f"job {job_id} already exists")
            job.id = job_id
            stored = self.jobs[job_id] = FakeJob(
                job_id, job.name, validate_queue(job.queue), data, job.attempts
            )
            delay_ms = job.effective_delay_ms
            self.dispatched.append(Dispatched(job_id, type(job), job.queue, decode_payload(data), delay_ms))
            self.queues.add(stored.queue)
            self._enqueue(stored, delay_ms)
            ids.append(job_id)
        return ids

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
            receipt = (worker_id, queue, request_id)
            if receipt in self._receipts:  # the same claim again: what it took, still held
                again = [c for c in self._receipts[receipt] if self._held_quietly(c)]
                claims.append(Claim(again, [], self._next_due(queue), False))
                continue
            ready, taken = self._queue(queue), list[ClaimedJob]()
            while ready and len(taken) < limit:
                job = ready.popleft()
                job.state, job.token, job.worker = "running", str(next(self._tokens)), worker_id
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
            self._receipts[receipt] = taken
            due = self._next_due(queue) if len(taken) < limit else -1
            claims.append(Claim(taken, [], due, bool(ready)))
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
        return [len(self._queue(q)) for q in queues]

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

    async def ack(self, job: ClaimedJob) -> bool:
        return self._settle(job, "done")

    async def retry(self, job: ClaimedJob, delay_ms: int, error: dict[str, Any]) -> bool:
        held = self._held(job)
        if held is None:
            self._notify()
            return False
        held.attempts += 1
        held.error = error
        self._enqueue(held, delay_ms)
        return True

    async def fail(self, job: ClaimedJob, error: dict[str, Any], *, count_attempt: bool = True) -> bool:
        return self._settle(job, "failed", error, attempts=1 if count_attempt else 0)

    async def release(self, job: ClaimedJob) -> bool:
        held = self._held(job)
        if held is None:
            self._notify()
            return False
        self._enqueue(held, 0, head=True)
        return True

    def _settle(
        self, job: ClaimedJob, state: str, error: dict[str, Any] | None = None, attempts: int = 1
    ) -> bool:
        held = self._held(job)
        if held is not None:
            held.state, held.attempts = state, held.attempts + attempts
            if error is not None:
                held.error = error
        self._notify()
        return held is not None

    async def promote(self, queues: Sequence[str]) -> tuple[int, int]:
        self._call("promote")
        due = sorted(
            (
                j
                for j in self.jobs.values()
                if j.state == "delayed" and j.queue in queues and j.due_ms <= self.clock.now_ms
            ),
            key=lambda j: j.due_ms,
        )
        for job in due:
            self._enqueue(job, 0)
        dues = [self._next_due(q) for q in queues]
        return len(due), min([d for d in dues if d >= 0], default=-1)

    async def reap(self, queue: str, *, max_stalls: int) -> Reaped:
        self._call("reap")
        requeued, failed = [], []
        for job in list(self.jobs.values()):
            if job.queue == queue and job.state == "running" and job.lease_until_ms <= self.clock.now_ms:
                job.stalls += 1
                if job.stalls > max_stalls:
                    job.state, job.error = "failed", {"reason": "stalled"}
                    failed.append(job.id)
                else:
                    job.token = ""
                    self._enqueue(job, 0, head=True)
                    requeued.append(job.id)
        self._notify()
        return Reaped(requeued, failed, 0)

    async def wait_for_work(self, queues: Sequence[str], block_seconds: float) -> bool:
        self._call("wait_for_work")
        with self.clock.move_on_after(block_seconds):
            while not any(self._queue(q) for q in queues):
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
