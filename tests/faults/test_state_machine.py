"""W2b: a Hypothesis state machine drives RedisEngine on the real Redis against a Python model.

Rules interleave dispatch (immediate and delayed; plain and unique), claims by three workers with batch sizes
1-4 (and replays of a claim), lease renewal, ack, retry (with and without delay), fail,
release, promote, reap (max stalls 0-2), clock steps, and replays with stale tokens of
ack/retry/fail/release/renew, plus replayed dispatches, and abort (of a job in any state,
and replays of an abort call). Time is a FakeClock passed to the
engine, so every due time and lease deadline is exact. After every step the whole Redis
state of the queue is read back and compared with the model:

* every dispatched job is in exactly one of ready/delayed/running/failed, or done (acked: its
  record is gone, at most a "done" replay marker remains); the queue list holds exactly the
  model's ready jobs, in the model's order, each as the entry the model expects (an inline
  record for a job dispatched to run now and never claimed, else its id); the three sorted
  sets hold exactly the model's jobs with the model's scores;
* a job waiting inline has no key; every other record's state, attempts, runs, stalls, max
  attempts, schedule and payload match;
* a running job has exactly one current token (and worker), and a running entry; no other
  job has a token;
* attempts used never exceed the maximum; stall counts change only in reap, upwards;
* an abort ends a ready, delayed or running job in the failed set (no attempt used, the
  running one's lease revoked and marked for its worker) and refuses any other; a replayed
  abort call answers true again and changes nothing;
* stale tokens change nothing: they are refused, except that the run which ended a job may
  resend the very step that ended it (a lost reply) and is told "done" again;
* a unique key's lock names the job holding it exactly while that job is live (ready,
  delayed, running): a dispatch of a held key returns the holder's id and stores nothing, and
  the move into done or failed lets the key go; a replayed unique dispatch changes nothing;
* no job is claimed before its due time, and no job in the queue list is due later than now;
  claims take jobs from the head of the list: dispatched, retried and promoted jobs join at
  the tail (promoted ones in (due, id) order), released and reaped ones go back to the head.

The claim reply's "ms until the next delayed job" is checked here only for empty claims; a
partial claim gets its own test below.

Hypothesis is synchronous and the engine is not: each machine owns an asyncio event loop
for its lifetime, opens its engine (with its own key prefix) on it, runs each rule with
run_until_complete, and closes the engine on that loop in teardown.

Size: AIOJOBS_HYPOTHESIS_EXAMPLES (default 2,000, as in the README's fault table, row W2b)
examples of up to AIOJOBS_HYPOTHESIS_STEPS (default 25) steps each.

W2f, at the end of this file, is a second machine for flows: chains of 1 to 3 steps, jobs
that depend on two others (failing with them, or run anyway), and batches of 2 members with
an on_complete or on_success callback, with claims, ack, fail,
abort and failed retry of any job and replays of ack and fail; it checks that every job is
in exactly one state set as a model says, with its D (its prerequisite not done yet), W,
reason and batch, each batch's counts and ids, and that no job waits on a prerequisite (or a
batch) that has ended. Size: AIOJOBS_FLOW_EXAMPLES (default 150) examples of up to AIOJOBS_FLOW_STEPS
(default 30) steps.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support.clock import FakeClock
from support.engine_calls import claim_from, dispatch_marker
from support.keyspace import delete_prefix

from aiojobs_redis import Job, RedisEngine, Settings, batch, chain, use_engine
from aiojobs_redis.keys import FORMAT_VERSION
from aiojobs_redis.records import ClaimedJob

T = TypeVar("T")

QUEUE = "w2b"
WORKERS = ("w1", "w2", "w3")
LEASE_MS = 2_000
START_MS = 1_800_000_000_000
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "boom"}
# Real (not fake) seconds within which a replayed claim still finds its receipt (PX lease).
RECEIPT_FRESH_S = LEASE_MS / 1000 / 2
EXAMPLES = int(os.environ.get("AIOJOBS_HYPOTHESIS_EXAMPLES", "2000"))
STEPS = int(os.environ.get("AIOJOBS_HYPOTHESIS_STEPS", "25"))

PICK = st.integers(min_value=0, max_value=1_000_000)


class Once(Job):
    name = "w2b.Once"
    queue = QUEUE
    attempts = 1

    async def handle(self) -> None:
        return None


class Twice(Job):
    name = "w2b.Twice"
    queue = QUEUE
    attempts = 2

    async def handle(self) -> None:
        return None


class Thrice(Job):
    name = "w2b.Thrice"
    queue = QUEUE
    attempts = 3

    async def handle(self) -> None:
        return None


JOB_CLASSES: dict[int, type[Job]] = {1: Once, 2: Twice, 3: Thrice}


class OneAtATime(Job):
    queue = QUEUE
    attempts = 2
    unique = True
    unique_key = "key"

    async def handle(self) -> None:
        return None


UNIQUE_KEYS = ("a", "b")
LIVE = ("ready", "delayed", "running")


@dataclass
class ModelJob:
    id: str
    name: str
    payload: bytes
    max_attempts: int
    created: int
    state: str  # ready | delayed | running | failed | done
    score: int  # its score in the sorted set of its state (unused when ready or done)
    scheduled: int  # the record's "d": when it became (or becomes) claimable
    attempts: int = 0
    runs: int = 0
    stalls: int = 0
    token: str | None = None
    worker: str | None = None
    settled_by: str | None = None  # "<step> <token>": the run that last ended it, and how
    # ("abort <abort id>" when an abort did)
    issued: list[ClaimedJob] = field(default_factory=list)  # every lease ever handed out
    done_at: int | None = None  # fake ms of the ack
    done_real: float | None = None  # monotonic s of the ack
    inline: bool = False  # waits in the queue list as an inline record: no key of its own yet
    lock: str | None = None  # a unique job's lock suffix ("<name>:<key>")

    def entry(self) -> bytes:
        """Its entry in the queue list."""
        if not self.inline:
            return self.id.encode()
        head = f"!{FORMAT_VERSION}:{self.id} {self.name} {self.max_attempts} {self.created} "
        return head.encode() + self.payload


@dataclass
class DispatchCall:
    """One dispatch script call as the engine sent it, to be sent again."""

    name: str
    max_attempts: int
    delay_ms: int
    now: int
    ids: list[str]
    at: float  # monotonic s


@dataclass
class LastClaim:
    request: str
    held: list[tuple[str, str]]  # (id, token) as claimed
    at: float  # monotonic s


@dataclass
class Figures:
    """Totals over all examples of one test, printed at the end."""

    machines: int = 0
    steps: int = 0
    checks: int = 0
    jobs: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        rules = " ".join(f"{k}={v}" for k, v in sorted(self.rules.items()))
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"W2b: {self.machines} examples run, {self.steps} steps, {self.checks} invariant checks, "
            f"{self.jobs} jobs, 0 invariant violations\n  rules: {rules}\n  outcomes: {outcomes}"
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class QueueMachine(RuleBasedStateMachine):
    # Set by the test before the run.
    url: ClassVar[str] = ""
    root_prefix: ClassVar[str] = ""
    figures: ClassVar[Figures] = Figures()

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(START_MS)
        self.settings = Settings(url=self.url, prefix=f"{self.root_prefix}{uuid.uuid4().hex[:10]}:")
        self.engine = RedisEngine(self.settings, clock=self.clock)
        self.run(self.engine.ping())
        self.keys = self.engine.keys(QUEUE)
        self.jobs: dict[str, ModelJob] = {}
        self.queue: list[str] = []  # the queue list, head first
        self.calls: list[DispatchCall] = []
        self.believed: dict[str, dict[str, ClaimedJob]] = {w: {} for w in WORKERS}  # worker -> id -> lease
        self.last_claim: dict[str, LastClaim] = {}
        self.request_seq = 0
        self.last_rule = ""
        self.stalls_seen: dict[str, int] = {}
        self.aborted_runs: set[tuple[str, str]] = set()  # (id, token) of runs aborted while running
        self.abort_calls: list[tuple[str, str]] = []  # (id, abort id) of the aborts that ended a job
        self.locks: dict[str, str] = {}  # unique lock suffix -> the live job holding it
        self.unique_calls: list[tuple[str, str, int]] = []  # stored: id, key, delay
        self.figures.machines += 1

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self._delete_keys())
            self.run(self.engine.aclose())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    async def _delete_keys(self) -> None:
        k = self.keys
        names = [k.ready, k.delayed, k.running, k.failed, k.wake, k.aborted, f"{self.settings.prefix}queues"]
        names += [k.claim_receipt(w) for w in WORKERS]
        names += [dispatch_marker(k, call.ids[0]) for call in self.calls]
        names += [k.job(job_id) for job_id in self.jobs]
        names += [self.lock_key(key) for key in UNIQUE_KEYS]
        for start in range(0, len(names), 500):
            await self.engine.redis.delete(*names[start : start + 500])

    # -- helpers ------------------------------------------------------------------------------

    def now(self) -> int:
        return self.clock.now_ms

    def step(self, name: str) -> None:
        self.last_rule = name
        self.figures.rules[name] += 1
        self.figures.steps += 1

    def in_state(self, state: str) -> list[ModelJob]:
        """Jobs in `state` in (score, id) order; for "ready", use `queue` for the order."""
        return sorted((j for j in self.jobs.values() if j.state == state), key=lambda j: (j.score, j.id))

    def held_claims(self) -> list[tuple[str, ClaimedJob]]:
        return [(w, c) for w in WORKERS for _, c in sorted(self.believed[w].items())]

    def stale_claims(self) -> list[ClaimedJob]:
        return [
            c for j in sorted(self.jobs.values(), key=lambda j: j.id) for c in j.issued if c.token != j.token
        ]

    def is_current(self, claim: ClaimedJob) -> bool:
        job = self.jobs[claim.id]
        return job.state == "running" and job.token == claim.token

    def next_due(self) -> int:
        delayed = self.in_state("delayed")
        return max(0, delayed[0].score - self.now()) if delayed else -1

    def lock_key(self, key: str) -> str:
        return f"{self.keys.base}:u:{OneAtATime.name}:{key}"

    def ended(self, job: ModelJob) -> None:
        """The job reached a final state: its unique key (if any) is free."""
        if job.lock is not None and self.locks.get(job.lock) == job.id:
            del self.locks[job.lock]

    def forget_lease(self, claim: ClaimedJob) -> None:
        for held in self.believed.values():
            if claim.id in held and held[claim.id].token == claim.token:
                del held[claim.id]

    # -- rules: dispatch ----------------------------------------------------------------------

    @initialize(attempts=st.integers(min_value=1, max_value=3), count=st.integers(min_value=0, max_value=4))
    def start_with_work(self, attempts: int, count: int) -> None:
        """Most examples start with a few ready jobs, so claims have something to race for."""
        if count:
            self.enqueue(attempts, 0, count)

    @rule(
        attempts=st.integers(min_value=1, max_value=3),
        delay_ms=st.sampled_from([0, 0, 0, 1, 500, 2_000, 10_000]),
        count=st.integers(min_value=1, max_value=3),
    )
    def enqueue(self, attempts: int, delay_ms: int, count: int) -> None:
        self.step("enqueue")
        cls = JOB_CLASSES[attempts]
        payloads = [{"n": len(self.jobs) + i} for i in range(count)]
        jobs = [cls(p).set_delay(delay_ms / 1000) for p in payloads]
        if count == 1:
            ids = [self.run(self.engine.dispatch(jobs[0]))]
        else:
            ids = self.run(self.engine.dispatch_many(jobs))
        now = self.now()
        for job_id, payload in zip(ids, payloads, strict=True):
            assert job_id not in self.jobs
            due = now + delay_ms
            self.jobs[job_id] = ModelJob(
                id=job_id,
                name=cls.name,
                payload=orjson.dumps(payload),
                max_attempts=attempts,
                created=now,
                state="delayed" if delay_ms > 0 else "ready",
                score=due,
                scheduled=due,
                inline=delay_ms == 0,
            )
            if delay_ms == 0:
                self.queue.append(job_id)
        self.calls.append(DispatchCall(cls.name, attempts, delay_ms, now, ids, time.monotonic()))
        self.figures.jobs += count

    @rule(key=st.sampled_from(UNIQUE_KEYS), delay_ms=st.sampled_from([0, 0, 500, 2_000]))
    def enqueue_unique(self, key: str, delay_ms: int) -> None:
        self.step("enqueue_unique")
        lock = f"{OneAtATime.name}:{key}"
        payload = {"key": key, "n": len(self.jobs)}
        job = OneAtATime(payload).set_delay(delay_ms / 1000)
        job_id = self.run(self.engine.dispatch(job))
        holder = self.locks.get(lock)
        if holder is not None:
            assert (job_id, job.duplicate) == (holder, True), f"a live {key!r} job holds the key"
            self.figures.outcomes["unique_duplicate"] += 1
            return
        assert job_id not in self.jobs and not job.duplicate, f"the key {key!r} was free"
        now = self.now()
        self.jobs[job_id] = ModelJob(
            id=job_id,
            name=OneAtATime.name,
            payload=orjson.dumps(payload),
            max_attempts=OneAtATime.attempts,
            created=now,
            state="delayed" if delay_ms > 0 else "ready",
            score=now + delay_ms,
            scheduled=now + delay_ms,
            lock=lock,
        )
        if delay_ms == 0:
            self.queue.append(job_id)
        self.locks[lock] = job_id
        self.unique_calls.append((job_id, key, delay_ms))
        self.figures.jobs += 1
        self.figures.outcomes["unique_stored"] += 1

    @precondition(lambda self: any(self.jobs[c[0]].state != "done" for c in self.unique_calls))
    @rule(pick=PICK)
    def replay_unique_dispatch(self, pick: int) -> None:
        """A unique dispatch sent again (its reply was lost) while its job's record exists:
        it answers "stored" with the same id and changes nothing."""
        calls = [c for c in self.unique_calls if self.jobs[c[0]].state != "done"]
        self.step("replay_unique_dispatch")
        job_id, key, delay_ms = calls[pick % len(calls)]
        k = self.keys
        args: list[str | int | bytes] = [k.base, QUEUE, self.settings.max_payload_bytes, self.now()]
        args += [OneAtATime.name, OneAtATime.attempts, delay_ms, "", 0, ""]
        args += [job_id, b'{"replayed":true}', f"{OneAtATime.name}:{key}", "u", "keep"]
        reply = self.run(self.engine.scripts.dispatch_ex(keys=[k.ready, k.delayed, k.wake], args=args))
        assert reply == [job_id.encode(), b"stored"], f"a replayed unique dispatch answered {reply}"
        self.figures.outcomes["unique_replay_ignored"] += 1

    def replayable(self, call: DispatchCall) -> bool:
        """Whether what guards a replay of `call` surely still exists (it expires in real time)."""
        if call.delay_ms == 0:  # the call's marker, with PX = the replay guard
            return time.monotonic() - call.at < self.settings.replay_guard_ms / 1000 - 5
        # Each delayed job's key: its hash, or once acked a "done" marker until created + guard
        # (fake ms), with a real PX.
        return all(
            (job := self.jobs[job_id]).state != "done"
            or (
                job.done_at is not None
                and job.done_real is not None
                and job.created + self.settings.replay_guard_ms - job.done_at > 5_000
                and time.monotonic() - job.done_real < 2.0
            )
            for job_id in call.ids
        )

    @precondition(lambda self: bool(self.calls))
    @rule(pick=PICK)
    def replay_dispatch(self, pick: int) -> None:
        """The client sends a dispatch call again (its reply was lost): nothing may change."""
        candidates = [call for call in self.calls if self.replayable(call)]
        if not candidates:
            return
        self.step("replay_dispatch")
        call = candidates[pick % len(candidates)]
        k = self.keys
        # dispatch.lua's ARGV: base, queue, max payload, now, name, attempts, delay, deadline
        # ('' = none), replay guard, priority level, rate group, then id and payload pairs.
        # Other payloads than the first
        # time, so that a job stored again would show.
        args: list[str | int | bytes] = [k.base, QUEUE, self.settings.max_payload_bytes, call.now]
        args += [call.name, call.max_attempts, call.delay_ms, "", self.settings.replay_guard_ms, 0, ""]
        for job_id in call.ids:
            args += [job_id, b'{"replayed":true}']
        stored = self.run(self.engine.scripts.dispatch(keys=[k.ready, k.delayed, k.wake], args=args))
        assert stored == 0, f"a replayed dispatch of {call.ids} stored something again"
        self.figures.outcomes["dispatch_replay_ignored"] += 1

    # -- rules: claims ------------------------------------------------------------------------

    def _claim(self, worker: str, limit: int, request: str) -> None:
        now = self.now()
        expected = [self.jobs[job_id] for job_id in self.queue[:limit]]
        ready_left = len(self.queue) - len(expected)
        claim = self.run(
            claim_from(self.engine, QUEUE, limit, worker_id=worker, request_id=request, lease_ms=LEASE_MS)
        )
        assert [c.id for c in claim.jobs] == [j.id for j in expected], "claimed the wrong jobs or order"
        assert claim.quarantined == []
        assert claim.more == (ready_left > 0)
        if not expected:  # see test_claim_reports_the_next_due_time_after_a_partial_claim
            assert claim.next_due_ms == self.next_due()
        for got, job in zip(claim.jobs, expected, strict=True):
            assert job.scheduled <= now, f"{job.id} claimed before it was due"
            job.runs += 1
            assert got.token == f"{worker}:{job.runs}"
            assert (got.attempts_used, got.max_attempts, got.runs) == (
                job.attempts,
                job.max_attempts,
                job.runs,
            )
            assert got.name.decode() == job.name and got.payload == job.payload
            job.state, job.score, job.token, job.worker = "running", now + LEASE_MS, got.token, worker
            job.inline = False
            self.queue.remove(job.id)
            job.issued.append(got)
            self.believed[worker][job.id] = got
        self.last_claim[worker] = LastClaim(request, [(c.id, c.token) for c in claim.jobs], time.monotonic())
        self.figures.outcomes["claimed"] += len(claim.jobs)

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(min_value=1, max_value=4))
    def claim(self, worker: str, limit: int) -> None:
        self.step("claim")
        self.request_seq += 1
        self._claim(worker, limit, str(self.request_seq))

    @precondition(lambda self: bool(self.last_claim))
    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(min_value=1, max_value=4))
    def replay_claim(self, worker: str, limit: int) -> None:
        """The client sends its last claim again: it gets the jobs that claim still holds."""
        last = self.last_claim.get(worker)
        if last is None or time.monotonic() - last.at > RECEIPT_FRESH_S:
            return
        self.step("replay_claim")
        if not last.held:
            # An empty claim leaves no receipt: a replay is a fresh claim (the caller gets its jobs).
            self._claim(worker, limit, last.request)
            return
        still = [(i, t) for i, t in last.held if self.jobs[i].state == "running" and self.jobs[i].token == t]
        claim = self.run(
            claim_from(
                self.engine, QUEUE, limit, worker_id=worker, request_id=last.request, lease_ms=LEASE_MS
            )
        )
        assert [(c.id, c.token) for c in claim.jobs] == still, "a replayed claim changed hands"
        assert claim.next_due_ms == self.next_due() and not claim.more
        for c in claim.jobs:
            job = self.jobs[c.id]
            assert (c.attempts_used, c.max_attempts, c.runs) == (job.attempts, job.max_attempts, job.runs)
        self.figures.outcomes["claim_replays"] += 1

    # -- rules: the holder's transitions ------------------------------------------------------

    @precondition(lambda self: any(self.believed.values()))
    @rule(worker=st.sampled_from(WORKERS))
    def renew(self, worker: str) -> None:
        """Renew every lease the worker believes it holds; it drops those reported lost."""
        held = list(self.believed[worker].values())
        if not held:
            return
        self.step("renew")
        now = self.now()
        lost = self.run(self.engine.renew(QUEUE, [(c.id, c.token) for c in held], LEASE_MS))
        expected_lost = [c.id for c in held if not self.is_current(c)]
        assert lost == expected_lost
        for c in held:
            if self.is_current(c):
                self.jobs[c.id].score = now + LEASE_MS
            else:
                del self.believed[worker][c.id]
        self.figures.outcomes["renewed"] += len(held) - len(lost)
        self.figures.outcomes["renew_lost"] += len(lost)

    def _settle(self, op: str, pick: int) -> tuple[ClaimedJob, bool] | None:
        held = self.held_claims()
        if not held:
            return None
        self.step(op)
        _, claim = held[pick % len(held)]
        current = self.is_current(claim)
        self.forget_lease(claim)  # the worker is done with it, whatever Redis says
        self.figures.outcomes[f"{op}_{'accepted' if current else 'rejected'}"] += 1
        return claim, current

    @precondition(lambda self: any(self.believed.values()))
    @rule(pick=PICK)
    def ack(self, pick: int) -> None:
        settled = self._settle("ack", pick)
        if settled is None:
            return
        claim, current = settled
        assert self.run(self.engine.ack(claim)) is current
        if current:
            job = self.jobs[claim.id]
            job.state, job.token, job.worker, job.settled_by = "done", None, None, f"ack {claim.token}"
            job.done_at, job.done_real = self.now(), time.monotonic()
            self.ended(job)

    @precondition(lambda self: any(self.believed.values()))
    @rule(pick=PICK, delay_ms=st.sampled_from([0, 0, 1, 1_000, 5_000]))
    def retry(self, pick: int, delay_ms: int) -> None:
        """The attempt failed: retry while attempts remain, else fail (as the worker decides)."""
        held = self.held_claims()
        if held and (claim := held[pick % len(held)][1]).attempt >= claim.max_attempts:
            self.fail(pick, count_attempt=True)
            return
        settled = self._settle("retry", pick)
        if settled is None:
            return
        claim, current = settled
        assert self.run(self.engine.retry(claim, delay_ms, ERROR)) is current
        if current:
            self._apply_retry(self.jobs[claim.id], delay_ms)

    def _apply_retry(self, job: ModelJob, delay_ms: int) -> None:
        now = self.now()
        job.attempts += 1
        job.settled_by, job.token, job.worker = f"retry {job.token}", None, None
        job.state = "delayed" if delay_ms > 0 else "ready"
        job.score = job.scheduled = now + delay_ms
        if delay_ms == 0:
            self.queue.append(job.id)

    @precondition(lambda self: any(self.believed.values()))
    @rule(pick=PICK, count_attempt=st.booleans())
    def fail(self, pick: int, count_attempt: bool) -> None:
        settled = self._settle("fail", pick)
        if settled is None:
            return
        claim, current = settled
        assert self.run(self.engine.fail(claim, ERROR, count_attempt=count_attempt)) is current
        if current:
            job = self.jobs[claim.id]
            job.attempts += 1 if count_attempt else 0
            job.state, job.score, job.token, job.worker = "failed", self.now(), None, None
            job.settled_by = f"fail {claim.token}"
            self.ended(job)

    @precondition(lambda self: any(self.believed.values()))
    @rule(pick=PICK)
    def release(self, pick: int) -> None:
        settled = self._settle("release", pick)
        if settled is None:
            return
        claim, current = settled
        assert self.run(self.engine.release(claim)) is current
        if current:
            job = self.jobs[claim.id]
            job.state, job.token, job.worker, job.settled_by = "ready", None, None, f"release {claim.token}"
            self.queue.insert(0, job.id)  # back at the head

    # -- rules: abort -------------------------------------------------------------------------

    @precondition(lambda self: bool(self.jobs))
    @rule(pick=PICK)
    def abort(self, pick: int) -> None:
        """Abort a job in any state: one not yet ended ends failed ("aborted"), the rest stay."""
        self.step("abort")
        job = self.jobs[sorted(self.jobs)[pick % len(self.jobs)]]
        was = job.state
        outcome = self.run(self.engine.abort_job(job.id, QUEUE))
        expected = was in ("ready", "delayed", "running")
        assert (outcome.aborted, outcome.state) == (
            (True, was) if expected else (False, "already_final" if was == "failed" else outcome.state)
        ), f"abort of {job.id} ({was}): {outcome}"
        if not expected:
            assert outcome.state in ("already_final", "not_found")
            self.figures.outcomes["abort_refused"] += 1
            return
        if was == "ready":
            self.queue.remove(job.id)
        if was == "running":
            assert job.token is not None
            self.aborted_runs.add((job.id, job.token))
        job.state, job.score, job.token, job.worker = "failed", self.now(), None, None
        job.inline = False
        job.settled_by = f"abort {outcome.abort_id}"
        self.ended(job)  # abort is a final state: finish() frees a unique key
        self.abort_calls.append((job.id, outcome.abort_id))
        self.figures.outcomes[f"aborted_{was}"] += 1

    @precondition(lambda self: bool(self.abort_calls))
    @rule(pick=PICK)
    def replay_abort(self, pick: int) -> None:
        """An abort call sent again (its reply was lost): true again, nothing changes."""
        job_id, abort_id = self.abort_calls[pick % len(self.abort_calls)]
        if self.jobs[job_id].settled_by != f"abort {abort_id}":
            return
        self.step("replay_abort")
        outcome = self.run(self.engine._abort_in(QUEUE, job_id, abort_id, b'{"reason":"aborted"}', b""))
        assert (outcome.aborted, outcome.state) == (True, "replayed")
        self.figures.outcomes["abort_replays"] += 1

    @precondition(lambda self: any(self.believed.values()))
    @rule(worker=st.sampled_from(WORKERS))
    def look_for_aborts(self, worker: str) -> None:
        """A worker asks which of the runs it believes it holds were aborted."""
        held = [(c.id, c.token) for _, c in sorted(self.believed[worker].items())]
        if not held:
            return
        self.step("look_for_aborts")
        found = self.run(self.engine.aborted_runs(QUEUE, held))
        assert found == [job_id for job_id, token in held if (job_id, token) in self.aborted_runs]

    # -- rules: stale tokens ------------------------------------------------------------------

    @precondition(lambda self: any(c.token != j.token for j in self.jobs.values() for c in j.issued))
    @rule(
        pick=PICK,
        op=st.sampled_from(["ack", "retry", "retry_later", "fail", "fail_uncounted", "release", "renew"]),
        of_running=st.booleans(),
    )
    def stale_replay(self, pick: int, op: str, of_running: bool) -> None:
        """A lease that is no longer current (settled, reaped, re-claimed) must change nothing.

        With `of_running`, prefer old leases of jobs that another lease now holds. The run
        that last ended the job may replay the ack/retry/fail/release that ended it (a lost
        reply resent): that reports success again, and still changes nothing. Any other step
        with that token, and any renewal, is refused.
        """
        stale = self.stale_claims()
        if of_running:
            stale = [c for c in stale if self.jobs[c.id].state == "running"] or stale
        if not stale:
            return
        self.step("stale_replay")
        claim = stale[pick % len(stale)]
        assert not self.is_current(claim)
        e = self.engine
        result: bool
        if op == "ack":
            result = self.run(e.ack(claim))
        elif op in ("retry", "retry_later"):
            result = self.run(e.retry(claim, 1_000 if op == "retry_later" else 0, ERROR))
        elif op in ("fail", "fail_uncounted"):
            result = self.run(e.fail(claim, ERROR, count_attempt=op == "fail"))
        elif op == "release":
            result = self.run(e.release(claim))
        else:
            result = self.run(e.renew(QUEUE, [(claim.id, claim.token)], LEASE_MS)) != [claim.id]
        step = {"retry_later": "retry", "fail_uncounted": "fail"}.get(op, op)
        replay = step != "renew" and self.replay_reported(claim, step)
        if replay is None:  # the done marker may just have expired (real time): either answer
            self.figures.outcomes["stale_replay_marker_uncertain"] += 1
            return
        assert result is replay, f"stale {op} of {claim.id} with token {claim.token}: {result}"
        self.figures.outcomes["stale_replayed_as_success" if replay else "stale_rejected"] += 1

    def replay_reported(self, claim: ClaimedJob, step: str) -> bool | None:
        """Whether a resent ack/retry/fail/release of a non-current lease reports success."""
        job = self.jobs[claim.id]
        if job.settled_by != f"{step} {claim.token}":
            return False
        if job.state != "done":
            return True  # the record keeps the settling token
        assert job.done_at is not None and job.done_real is not None
        left_ms = job.created + self.settings.replay_guard_ms - job.done_at  # the marker's PX
        if left_ms <= 0:
            return False
        elapsed_ms = (time.monotonic() - job.done_real) * 1000
        return True if elapsed_ms < left_ms - 1_000 else None

    # -- rules: time and housekeeping ---------------------------------------------------------

    @rule(ms=st.sampled_from([1, 100, 500, 1_000, 1_999, 2_000, 2_001, 5_000, 30_000]))
    def advance(self, ms: int) -> None:
        self.step("advance")
        self.clock.advance(ms / 1000)

    @rule()
    def promote(self) -> None:
        self.step("promote")
        now = self.now()
        due = [j for j in self.in_state("delayed") if j.score <= now]
        for job in due:
            job.state = "ready"
            self.queue.append(job.id)
        moved, next_due = self.run(self.engine.promote([QUEUE]))
        assert (moved, next_due) == (len(due), self.next_due())
        self.figures.outcomes["promoted"] += moved

    @rule(max_stalls=st.integers(min_value=0, max_value=2))
    def reap(self, max_stalls: int) -> None:
        self.step("reap")
        now = self.now()
        requeued, failed = [], []
        for job in self.in_state("running"):
            if job.score > now:
                continue
            job.stalls += 1
            job.token = job.worker = None
            if job.stalls > max_stalls:
                job.state, job.score = "failed", now
                failed.append(job.id)
                self.ended(job)
            else:
                job.state = "ready"
                requeued.append(job.id)
        self.queue[:0] = requeued  # back at the head, in the order their leases lapsed
        reaped = self.run(self.engine.reap(QUEUE, max_stalls=max_stalls))
        assert (reaped.requeued, reaped.failed, reaped.trimmed) == (requeued, failed, 0)
        self.figures.outcomes["reaped"] += len(requeued)
        self.figures.outcomes["stalled_out"] += len(failed)

    # -- the invariants -----------------------------------------------------------------------

    @invariant()
    def redis_matches_model(self) -> None:
        self.figures.checks += 1
        k = self.keys
        ids = sorted(self.jobs)
        pipe = self.engine.redis.pipeline(transaction=False)
        pipe.lrange(k.ready, 0, -1)
        for key in (k.delayed, k.running, k.failed):
            pipe.zrange(key, 0, -1, withscores=True)
        for job_id in ids:
            if self.jobs[job_id].state == "done":
                pipe.get(k.job(job_id))
            else:
                pipe.hgetall(k.job(job_id))
        for key in UNIQUE_KEYS:
            pipe.get(self.lock_key(key))
        replies = self.run(pipe.execute(raise_on_error=False))
        locks = replies[len(replies) - len(UNIQUE_KEYS) :]
        del replies[len(replies) - len(UNIQUE_KEYS) :]
        for key, holder in zip(UNIQUE_KEYS, locks, strict=True):
            expected_holder = self.locks.get(f"{OneAtATime.name}:{key}")
            assert all(self.jobs[h].state in LIVE for h in self.locks.values())
            assert holder == (expected_holder.encode() if expected_holder else None), (
                f"lock {key!r} is {holder!r}, the model says {expected_holder} after {self.last_rule}"
            )
        assert sorted(self.queue) == sorted(j.id for j in self.jobs.values() if j.state == "ready")
        expected_entries = [self.jobs[job_id].entry() for job_id in self.queue]
        assert replies[0] == expected_entries, f"queue list differs from the model after {self.last_rule}"
        sets = {
            state: {_text(m): int(s) for m, s in reply}
            for state, reply in zip(("delayed", "running", "failed"), replies[1:4], strict=True)
        }
        for state, members in sets.items():
            unknown = set(members) - set(self.jobs)
            assert not unknown, f"{state} holds ids no one dispatched: {unknown}"
            expected = {j.id: j.score for j in self.jobs.values() if j.state == state}
            assert members == expected, f"{state} set differs from the model after {self.last_rule}"
        now = self.now()
        assert all(self.jobs[job_id].scheduled <= now for job_id in self.queue), "a ready job is not due yet"
        for job_id, reply in zip(ids, replies[4:], strict=True):
            self._check_record(self.jobs[job_id], reply)

    def _check_record(self, job: ModelJob, reply: Any) -> None:
        where = f"job {job.id} ({job.state}) after {self.last_rule}"
        if job.state == "done":
            assert job.settled_by is not None and job.settled_by.startswith("ack ")
            marker = f"done {job.settled_by.removeprefix('ack ')}".encode()
            assert reply in (None, marker), f"{where}: record not gone: {reply!r}"
            return
        if job.inline:
            assert reply == {}, f"{where}: a job waiting inline has a key: {reply!r}"
            return
        assert isinstance(reply, dict) and reply, f"{where}: record missing: {reply!r}"
        rec = {_text(f): _text(v) for f, v in reply.items()}
        assert rec["s"] == job.state, f"{where}: record state {rec['s']}"
        assert rec["v"] == str(FORMAT_VERSION), f"{where}: format version {rec.get('v')}"
        assert rec["n"] == job.name and rec["q"] == QUEUE and rec["p"] == job.payload.decode(), where
        assert int(rec["m"]) == job.max_attempts and int(rec["c"]) == job.created, where
        assert int(rec["d"]) == job.scheduled, f"{where}: scheduled {rec['d']} != {job.scheduled}"
        assert int(rec.get("a", 0)) == job.attempts <= job.max_attempts, f"{where}: attempts {rec.get('a')}"
        assert int(rec.get("k", 0)) == job.runs, f"{where}: runs {rec.get('k')}"
        stalls = int(rec.get("l", 0))
        assert stalls == job.stalls, f"{where}: stalls {stalls} != {job.stalls}"
        before = self.stalls_seen.get(job.id, 0)
        assert stalls >= before and (stalls == before or self.last_rule == "reap"), f"{where}: stalls moved"
        self.stalls_seen[job.id] = stalls
        assert rec.get("u") == job.lock, f"{where}: unique lock {rec.get('u')} != {job.lock}"
        assert rec.get("x") == job.settled_by, f"{where}: settled by {rec.get('x')} != {job.settled_by}"
        if job.state == "running":
            assert (rec.get("t"), rec.get("w")) == (job.token, job.worker), f"{where}: lease {rec}"
        else:
            assert "t" not in rec and "w" not in rec, f"{where}: a token outside running: {rec}"


def _run(url: str, prefix: str, examples: int, steps: int) -> None:
    QueueMachine.url, QueueMachine.root_prefix = url, prefix
    QueueMachine.figures = Figures()
    started = time.monotonic()
    try:
        run_state_machine_as_test(
            QueueMachine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        asyncio.run(delete_prefix(url, prefix))
    print(
        f"\n{QueueMachine.figures.summary()}\n  ({examples} examples asked, "
        f"up to {steps} steps each, {time.monotonic() - started:.1f} s)"
    )


@pytest.mark.timeout(600)  # 2,000 examples take about a minute; shrinking a failure takes longer
def test_w2b_engine_matches_the_model_under_random_interleavings(redis_url: str, prefix: str) -> None:
    _run(redis_url, prefix, EXAMPLES, STEPS)


@pytest.mark.anyio
async def test_claim_reports_the_next_due_time_after_a_partial_claim(clocked_engine: RedisEngine) -> None:
    """claim.lua's contract: when it claims fewer jobs than asked, it says when the next
    delayed job is due (it once compared the flat reply's length with the limit, and so
    answered -1 whenever it had claimed a job)."""
    await Once().set_delay(5).dispatch({"n": 1})
    await Once().dispatch({"n": 2})
    claim = await claim_from(clocked_engine, QUEUE, 4, worker_id="w1", request_id="1", lease_ms=LEASE_MS)
    assert len(claim.jobs) == 1
    assert claim.next_due_ms == 5_000, f"a partial claim reported next_due_ms={claim.next_due_ms}"


# -- W2f: flows (chains) ------------------------------------------------------------------------

FLOW_QUEUE = "w2f"
FLOW_EXAMPLES = int(os.environ.get("AIOJOBS_FLOW_EXAMPLES", "150"))
FLOW_STEPS = int(os.environ.get("AIOJOBS_FLOW_STEPS", "30"))
FLOW_ERROR: dict[str, Any] = {"reason": "permanent", "type": "PermanentFailure", "message": "boom"}


class FlowStep(Job):
    name = "w2f.Step"
    queue = FLOW_QUEUE
    attempts = 1

    async def handle(self) -> None:  # pragma: no cover - claimed and ended by the machine
        return None


@dataclass
class FlowModelJob:
    id: str
    prerequisites: list[str] = field(default_factory=list)  # P
    dependents: list[str] = field(default_factory=list)  # its edge set (at most one here)
    run_anyway: bool = False  # M "r"
    counted: list[str] = field(default_factory=list)  # E: prerequisites whose end it counted
    state: str = "waiting"  # ready | running | waiting | failed | done
    pending: int = 0  # D: prerequisites not done yet
    failed_by: str | None = None  # W
    reason: str | None = None  # of a failed job
    lease: ClaimedJob | None = None  # the last claim of it
    settled_by: str | None = None  # "fail <token>" while the failure that run made stands
    batch: str | None = None  # the batch it is a member or the callback of
    member: bool = False  # a member its batch still counts


@dataclass
class FlowModelBatch:
    id: str
    callback: str
    left: int  # members not ended
    mode: str  # "c" on_complete, "s" on_success
    ok: list[str] = field(default_factory=list)  # ended done, in order
    ko: list[str] = field(default_factory=list)  # ended failed or aborted, in order


class FlowMachine(RuleBasedStateMachine):
    """Chains of 1 to 3 steps (on_failure "fail"), jobs that depend on two others (on
    dependency failure "fail" or "run"), and batches of 2 members with an on_complete or
    on_success callback: claims, ack, fail, abort and failed retry of any job, and replays of ack and
    fail calls, on the real Redis with a fake clock (no lease
    lapses). After every step: each job is in exactly one state set (waiting zset, failed
    zset, queue list, running zset) or done (no record but the replay marker), as the model
    says; no job waits whose prerequisite has ended (done or failed), no callback waits for a
    batch that has ended; D, W and the reason of each record, and each batch's counts and
    ids, match the model."""

    url: ClassVar[str] = ""
    root_prefix: ClassVar[str] = ""
    figures: ClassVar[Figures] = Figures()

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.settings = Settings(url=self.url, prefix=f"{self.root_prefix}{uuid.uuid4().hex[:10]}:")
        self.engine = RedisEngine(self.settings, clock=FakeClock(START_MS))
        self.run(self.engine.ping())
        self.keys = self.engine.keys(FLOW_QUEUE)
        self.jobs: dict[str, FlowModelJob] = {}
        self.batches: dict[str, FlowModelBatch] = {}
        self.queue: list[str] = []  # ready jobs, head first
        self.request_seq = 0
        self.last_rule = ""
        self.figures.machines += 1

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.engine.aclose())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def step(self, name: str) -> None:
        self.last_rule = name
        self.figures.rules[name] += 1
        self.figures.steps += 1

    def in_state(self, *states: str) -> list[FlowModelJob]:
        return sorted((j for j in self.jobs.values() if j.state in states), key=lambda j: j.id)

    # -- the model's flow moves -------------------------------------------------------------

    def fail_down(self, job: FlowModelJob, how: str) -> None:
        """`job` ended failed or aborted: what waits on it fails (or, run anyway, counts it),
        and so on down the flow."""
        todo = [(job, how)]
        while todo:
            ended, how = todo.pop(0)
            for dep in (self.jobs[d] for d in ended.dependents):
                if dep.state not in ("waiting", "failed"):
                    continue
                if dep.run_anyway:
                    self.count_end(dep, ended)
                elif dep.state == "waiting":
                    dep.state, dep.failed_by, dep.reason = "failed", ended.id, f"dependency_{how}"
                    todo.append((dep, "failed"))

    def count_end(self, dep: FlowModelJob, ended: FlowModelJob) -> None:
        """`dep` (waiting, or failed in any way) counts `ended`'s end, once (E)."""
        if ended.id in dep.counted:
            return
        dep.counted.append(ended.id)
        dep.pending -= 1
        if dep.pending <= 0 and dep.state == "waiting":
            dep.state = "ready"
            self.queue.append(dep.id)

    def succeeded(self, job: FlowModelJob) -> None:
        job.state, job.settled_by = "done", None
        for dep in (self.jobs[d] for d in job.dependents):
            if dep.state in ("waiting", "failed"):
                self.count_end(dep, job)

    def member_ended(self, job: FlowModelJob, how: str) -> None:
        """A member its batch counts ended (`how`: done, failed, aborted): counted; at the
        last, the callback is released; an on_success callback fails at a failed member."""
        if not job.member or job.batch is None:
            return
        batch = self.batches[job.batch]
        batch.left -= 1
        (batch.ok if how == "done" else batch.ko).append(job.id)
        callback = self.jobs[batch.callback]
        if callback.state != "waiting":
            return
        if how != "done" and batch.mode == "s":
            callback.state, callback.failed_by, callback.reason = "failed", job.id, f"dependency_{how}"
        elif batch.left <= 0:
            callback.state = "ready"
            self.queue.append(callback.id)

    def retried_member(self, job: FlowModelJob) -> None:
        """A failed member retried: an open batch (or one whose on_success callback a member
        failed) takes its failure back, and the callback waits again once no failure is
        left; a closed one lets the member go."""
        if not job.member or job.batch is None:
            return
        batch = self.batches[job.batch]
        callback = self.jobs[batch.callback]
        failed_by_member = callback.state == "failed" and callback.failed_by is not None
        if batch.left <= 0 and not failed_by_member:
            job.member, job.batch = False, None
            return
        batch.left += 1
        batch.ko.remove(job.id)
        if failed_by_member and not batch.ko:
            callback.state, callback.failed_by, callback.reason = "waiting", None, None

    def waits_for_its_batch(self, job: FlowModelJob) -> bool:
        batch = self.batches.get(job.batch or "")
        return batch is not None and batch.callback == job.id and batch.left > 0

    def revive_dependents(self, job: FlowModelJob) -> None:
        """What `job`'s failure failed waits again (unless another prerequisite is still
        failed), and so on down; a run-anyway job that counted it as ended waits for it."""
        todo = [job]
        while todo:
            revived = todo.pop(0)
            for dep in (self.jobs[d] for d in revived.dependents):
                if revived.id in dep.counted and dep.run_anyway and dep.state in ("waiting", "failed"):
                    dep.counted.remove(revived.id)
                    dep.pending += 1
                if dep.state != "failed" or dep.failed_by != revived.id:
                    continue
                other = [p for p in dep.prerequisites if self.jobs[p].state == "failed"]
                if other:
                    dep.failed_by = other[0]
                else:
                    self.restart(dep)
                    todo.append(dep)

    def restart(self, job: FlowModelJob) -> None:
        job.failed_by = job.reason = job.settled_by = None
        if job.pending > 0 or self.waits_for_its_batch(job):
            job.state = "waiting"
        else:
            job.state = "ready"
            self.queue.append(job.id)

    # -- rules ------------------------------------------------------------------------------

    @precondition(lambda self: len(self.jobs) < 9)  # a few chains: the rules act on them
    @rule(steps=st.integers(min_value=1, max_value=3))
    def dispatch_chain(self, steps: int) -> None:
        self.step("dispatch_chain")
        ids = self.run(self._dispatch(steps))
        before = None
        for job_id in ids:
            job = FlowModelJob(job_id, [before] if before else [], pending=1 if before else 0)
            if before is not None:
                self.jobs[before].dependents.append(job_id)
            self.jobs[job_id] = job
            before = job_id
        self.jobs[ids[0]].state = "ready"
        self.queue.append(ids[0])
        self.figures.jobs += steps

    async def _dispatch(self, steps: int) -> list[str]:
        with use_engine(self.engine):
            return await chain(*(FlowStep({"n": n}) for n in range(steps))).dispatch()

    @precondition(lambda self: len(self.jobs) < 9)
    @rule(mode=st.sampled_from(["c", "s"]))
    def dispatch_batch(self, mode: str) -> None:
        self.step("dispatch_batch")
        callback = FlowStep({"callback": True})
        batch_id, members = self.run(self._dispatch_batch(callback, mode))
        assert callback.id is not None
        for member in members:
            self.jobs[member] = FlowModelJob(member, state="ready", batch=batch_id, member=True)
            self.queue.append(member)
        self.jobs[callback.id] = FlowModelJob(callback.id, batch=batch_id)
        self.batches[batch_id] = FlowModelBatch(batch_id, callback.id, left=len(members), mode=mode)
        self.figures.jobs += len(members) + 1

    async def _dispatch_batch(self, callback: Job, mode: str) -> tuple[str, list[str]]:
        members = [FlowStep({"n": n}) for n in range(2)]
        with use_engine(self.engine):
            if mode == "s":
                return await batch(members, on_success=callback).dispatch()
            return await batch(members, on_complete=callback).dispatch()

    @precondition(lambda self: len(self.jobs) < 12 and len(self.leaves()) >= 2)
    @rule(pick=PICK, run_anyway=st.booleans())
    def dispatch_join(self, pick: int, run_anyway: bool) -> None:
        """A job with depends_on two jobs that nothing waits for yet, in any state."""
        leaves = self.leaves()
        at = pick % len(leaves)
        first, second = leaves[at], leaves[(at + 1 + pick // len(leaves) % (len(leaves) - 1)) % len(leaves)]
        self.step("dispatch_join")
        job_id = self.run(self._dispatch_join([first.id, second.id], run_anyway))
        job = FlowModelJob(job_id, [first.id, second.id], run_anyway=run_anyway)
        self.jobs[job_id] = job
        cause = None
        for before in (first, second):
            if before.state == "done" or (run_anyway and before.state == "failed"):
                job.counted.append(before.id)
                continue
            job.pending += 1
            before.dependents.append(job_id)
            if before.state == "failed" and cause is None:
                cause = before
        if cause is not None:
            how = "aborted" if cause.reason == "aborted" else "failed"
            job.state, job.failed_by, job.reason = "failed", cause.id, f"dependency_{how}"
        elif job.pending > 0:
            job.state = "waiting"
        else:
            job.state = "ready"
            self.queue.append(job_id)
        self.figures.jobs += 1

    def leaves(self) -> list[FlowModelJob]:
        return [j for j in self.jobs.values() if not j.dependents and not j.batch]

    async def _dispatch_join(self, ids: list[str], run_anyway: bool) -> str:
        with use_engine(self.engine):
            return await FlowStep({"join": ids}).dispatch(
                depends_on=ids, on_dependency_failure="run" if run_anyway else "fail"
            )

    @precondition(lambda self: bool(self.queue))
    @rule()
    def claim(self) -> None:
        self.step("claim")
        self.request_seq += 1
        got = self.run(
            claim_from(
                self.engine, FLOW_QUEUE, 1, worker_id="w", request_id=str(self.request_seq), lease_ms=LEASE_MS
            )
        )
        assert [c.id for c in got.jobs] == self.queue[:1], "claimed the wrong job"
        job = self.jobs[self.queue.pop(0)]
        job.state, job.lease = "running", got.jobs[0]

    @precondition(lambda self: bool(self.in_state("running")))
    @rule(pick=PICK)
    def ack(self, pick: int) -> None:
        self.step("ack")
        running = self.in_state("running")
        job = running[pick % len(running)]
        assert job.lease is not None
        assert self.run(self.engine.ack(job.lease)) is True
        self.succeeded(job)
        self.member_ended(job, "done")
        self.figures.outcomes["acked"] += 1

    @precondition(lambda self: bool(self.in_state("running")))
    @rule(pick=PICK)
    def fail(self, pick: int) -> None:
        self.step("fail")
        running = self.in_state("running")
        job = running[pick % len(running)]
        assert job.lease is not None
        assert self.run(self.engine.fail(job.lease, FLOW_ERROR)) is True
        job.state, job.reason, job.settled_by = "failed", "permanent", f"fail {job.lease.token}"
        self.fail_down(job, "failed")
        self.member_ended(job, "failed")
        self.figures.outcomes["failed"] += 1

    @precondition(lambda self: bool(self.in_state("done", "failed")))
    @rule(pick=PICK)
    def replay_end(self, pick: int) -> None:
        """A worker sends its ack or fail again (its reply was lost): answered "done", and
        nothing changes; a run whose outcome has since been retried is told no."""
        ended = [j for j in self.in_state("done", "failed") if j.lease is not None]
        if not ended:
            return
        self.step("replay_end")
        job = ended[pick % len(ended)]
        assert job.lease is not None
        if job.state == "done":
            assert self.run(self.engine.ack(job.lease)) is True
        else:
            applied = self.run(self.engine.fail(job.lease, FLOW_ERROR))
            assert applied is (job.settled_by == f"fail {job.lease.token}"), job
        self.figures.outcomes["replayed"] += 1

    @precondition(lambda self: bool(self.jobs))
    @rule(pick=PICK)
    def abort(self, pick: int) -> None:
        self.step("abort")
        jobs = sorted(self.jobs)
        job = self.jobs[jobs[pick % len(jobs)]]
        aborted = self.run(self.engine.abort(job.id, FLOW_QUEUE))
        live = job.state in ("ready", "running", "waiting")
        assert aborted is live, f"abort of a {job.state} job answered {aborted}"
        if not live:
            return
        if job.state == "ready":
            self.queue.remove(job.id)
        job.state, job.reason, job.settled_by = "failed", "aborted", None
        self.fail_down(job, "aborted")
        self.member_ended(job, "aborted")
        self.figures.outcomes["aborted"] += 1

    @precondition(lambda self: bool(self.jobs))
    @rule(pick=PICK)
    def failed_retry(self, pick: int) -> None:
        self.step("failed_retry")
        jobs = sorted(self.jobs)
        job = self.jobs[jobs[pick % len(jobs)]]
        report = self.run(self.engine.failed_retry_report([job.id], queue=FLOW_QUEUE))
        # What it would wait for that is still failed: a prerequisite, or what failed it.
        waits_on = [i for i in (*job.prerequisites, job.failed_by) if i and self.jobs[i].state == "failed"]
        batch = self.batches.get(job.batch or "")
        if batch is not None and batch.callback == job.id and batch.mode == "s" and batch.ko:
            waits_on.append(batch.ko[0])  # an on_success callback cannot succeed yet
        if job.state != "failed" or waits_on:
            assert report.requeued == 0, f"requeued a {job.state} job (waits on {waits_on})"
            if job.state == "failed":
                assert report.blocked == {job.id: waits_on[0]}
            return
        assert report.requeued == 1
        self.restart(job)
        self.retried_member(job)
        self.revive_dependents(job)
        self.figures.outcomes["retried"] += 1

    # -- the check --------------------------------------------------------------------------

    @invariant()
    def redis_matches_the_model(self) -> None:
        self.figures.checks += 1
        self.run(self._check())

    async def _check(self) -> None:
        k = self.keys
        ids = sorted(self.jobs)
        async with self.engine.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.ready, 0, -1)
            pipe.zrange(k.waiting, 0, -1)
            pipe.zrange(k.failed, 0, -1)
            pipe.zrange(k.running, 0, -1)
            pipe.zrange(k.delayed, 0, -1)
            for job_id in ids:
                pipe.type(k.job(job_id))
                pipe.hmget(k.job(job_id), "s", "D", "W", "e", "P", "B")
            for batch_id in sorted(self.batches):
                pipe.hmget(k.batch(batch_id), "left", "ok", "ko", "cb")
                pipe.lrange(f"{k.batch(batch_id)}:ok", 0, -1)
                pipe.lrange(f"{k.batch(batch_id)}:ko", 0, -1)
            replies = await pipe.execute(raise_on_error=False)  # HMGET of a "done" marker fails
        placed = self._check_sets(*([_text(m) for m in r] for r in replies[:5]))
        for index, job_id in enumerate(ids):
            kind, fields = replies[5 + 2 * index], replies[6 + 2 * index]
            if not isinstance(fields, list):
                fields = [None] * 6
            self._check_flow_record(
                self.jobs[job_id], kind, [None if f is None else _text(f) for f in fields]
            )
            assert self.jobs[job_id].state != "done" or job_id not in placed, f"{job_id} is done and placed"
        batch_replies = replies[5 + 2 * len(ids) :]
        for index, batch_id in enumerate(sorted(self.batches)):
            self._check_batch(self.batches[batch_id], *batch_replies[3 * index : 3 * index + 3])

    def _check_sets(
        self, queued: list[str], waiting: list[str], failed: list[str], running: list[str], delayed: list[str]
    ) -> Counter[str]:
        """The queue list and the state sets as the model says, no job in two of them."""
        where = f"after {self.last_rule}"
        assert queued == self.queue, f"queue list {queued} != {self.queue} {where}"
        sets = {"waiting": waiting, "failed": failed, "running": running}
        for name, members in sets.items():
            assert sorted(members) == [j.id for j in self.in_state(name)], f"{name} set {where}"
        assert delayed == []
        placed = Counter([*queued, *waiting, *failed, *running])
        assert all(n == 1 for n in placed.values()), f"a job in two state sets {where}: {placed}"
        return placed

    def _check_flow_record(self, job: FlowModelJob, kind: Any, fields: list[str | None]) -> None:
        where = f"job {job.id} ({job.state}) after {self.last_rule}"
        state, pending, failed_by, error, prerequisites, batch_id = fields
        if job.state == "done":
            assert kind in (b"none", b"string"), f"{where}: record not gone"
            return
        assert kind == b"hash" and state == job.state, f"{where}: record state {state}"
        assert (prerequisites or "").split() == job.prerequisites, where
        if job.prerequisites:
            assert int(pending or 0) == job.pending, f"{where}: D {pending} != {job.pending}"
        assert failed_by == job.failed_by, f"{where}: W {failed_by} != {job.failed_by}"
        assert batch_id == job.batch, f"{where}: batch {batch_id} != {job.batch}"
        if job.state == "failed":
            assert orjson.loads(error or "{}").get("reason") == job.reason, where
        if job.state != "waiting":
            return
        if not job.prerequisites:
            assert self.waits_for_its_batch(job), f"{where}: waits for a batch that has ended"
            return
        states = [self.jobs[p].state for p in job.prerequisites]
        assert any(s in ("ready", "running", "waiting") for s in states), f"{where}: waits on {states}"
        assert job.run_anyway or "failed" not in states, f"{where}: waits on {states}"

    def _check_batch(self, model: FlowModelBatch, counts: Any, ok: Any, ko: Any) -> None:
        where = f"batch {model.id} after {self.last_rule}"
        left, ok_count, ko_count, callback = (_text(c) for c in counts)
        assert (int(left), int(ok_count), int(ko_count)) == (model.left, len(model.ok), len(model.ko)), where
        assert ([_text(i) for i in ok], [_text(i) for i in ko]) == (model.ok, model.ko), where
        assert callback == model.callback, where


def _run_flows(url: str, prefix: str, examples: int, steps: int) -> None:
    FlowMachine.url, FlowMachine.root_prefix = url, prefix
    FlowMachine.figures = Figures()
    started = time.monotonic()
    try:
        run_state_machine_as_test(
            FlowMachine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        asyncio.run(delete_prefix(url, prefix))
    print(
        f"\n{FlowMachine.figures.summary().replace('W2b', 'W2f')}\n  ({examples} examples asked, "
        f"up to {steps} steps each, {time.monotonic() - started:.1f} s)"
    )


@pytest.mark.timeout(600)
def test_w2f_flows_match_the_model_under_random_interleavings(redis_url: str, prefix: str) -> None:
    _run_flows(redis_url, prefix, FLOW_EXAMPLES, FLOW_STEPS)
