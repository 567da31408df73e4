"""Pause and resume, the worker's rules, on the FakeEngine: no Redis, time from a FakeClock.

A paused queue starts nothing while its running jobs finish; an idle worker asks about it
once per idle wait, not in a loop; resume wakes an idle worker at once; a busy worker looks
again after PAUSED_RECHECK; a worker of several queues keeps serving the others. Also the
module-level pause()/resume() and what the sync engine says to them.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import anyio
import pytest
from test_worker_on_fake_engine import running

import aiojobs_redis
from aiojobs_redis import (
    ConfigurationError,
    InvalidQueueName,
    Job,
    ShardedQueue,
    SyncEngine,
    Worker,
    use_engine,
)
from aiojobs_redis.testing import FakeClock, FakeEngine
from aiojobs_redis.worker import PAUSED_RECHECK

pytestmark = pytest.mark.anyio

LIMIT = 5  # seconds of real time a burst may take: a guard, never a wait
IDLE_WAIT = 5.0
QUEUE_A, QUEUE_B = "pause-rules-a", "pause-rules-b"
SHARDED = ShardedQueue("pause-rules-sharded", shards=3)


class Gates:
    """Which jobs started and ended; a job waits for its gate unless told not to."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[str] = []
        self.gates: dict[str, anyio.Event] = {}
        self.changed = anyio.Event()

    def note(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, predicate: Any) -> None:
        while not predicate():
            await self.changed.wait()

    def open(self, tag: str) -> None:
        self.gates.setdefault(tag, anyio.Event()).set()


class OnA(Job):
    name = "pause_rules.OnA"
    queue = QUEUE_A
    gates: ClassVar[Gates] = Gates()

    async def handle(self) -> None:
        tag = self.payload["tag"]
        self.gates.started.append(tag)
        self.gates.note()
        if self.payload.get("gated"):
            await self.gates.gates.setdefault(tag, anyio.Event()).wait()
        self.gates.ended.append(tag)
        self.gates.note()


class OnB(OnA):
    name = "pause_rules.OnB"
    queue = QUEUE_B


class OnSharded(OnA):
    name = "pause_rules.OnSharded"
    queue = SHARDED.name


@pytest.fixture
def gates() -> Gates:
    OnA.gates = Gates()
    return OnA.gates


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(FakeClock())


def worker_of(engine: FakeEngine, queues: list[str], **options: Any) -> Worker:
    options = {"reap_interval": 1000, "promote_interval": 1000, "idle_wait": IDLE_WAIT, **options}
    return Worker(engine, queues, clock=engine.clock, telemetry=False, tracing=False, **options)


async def settle() -> None:
    """Let every task run until none can go on (the fake engine never waits on I/O)."""
    for _ in range(50):
        await anyio.lowlevel.checkpoint()


async def test_a_paused_queue_starts_nothing_new_while_its_running_jobs_finish(
    engine: FakeEngine, gates: Gates
) -> None:
    clock = engine.clock
    await engine.dispatch_many([OnA({"tag": f"r{n}", "gated": True}) for n in range(2)])
    async with running(worker_of(engine, [QUEUE_A], concurrency=4)):
        await gates.until(lambda: len(gates.started) == 2)
        assert await engine.pause(QUEUE_A) is True
        assert await engine.pause(QUEUE_A) is False, "paused already"
        await engine.dispatch_many([OnA({"tag": f"w{n}"}) for n in range(5)])
        for tag in ("r0", "r1"):
            gates.open(tag)
        await gates.until(lambda: len(gates.ended) == 2)
        claims = engine.calls["claim"]
        for _ in range(4):  # four idle waits: one claim each, no busy loop
            clock.advance(IDLE_WAIT)
            await settle()
        assert gates.started == ["r0", "r1"], "nothing new started while paused"
        assert engine.calls["claim"] - claims <= 4 + 1
        assert await engine.paused([QUEUE_A, QUEUE_B]) == [True, False]
        assert await engine.resume(QUEUE_A) is True
        await gates.until(lambda: len(gates.ended) == 7)  # woken at once: the clock stands still
        assert await engine.resume(QUEUE_A) is False, "not paused any more"


async def test_the_worker_logs_once_that_a_queue_is_paused_and_once_that_it_was_resumed(
    engine: FakeEngine, gates: Gates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="aiojobs_redis.worker")
    await engine.pause(SHARDED.name)
    await engine.dispatch_many([OnSharded({"tag": f"s{n}"}) for n in range(3)])
    clock = engine.clock
    async with running(worker_of(engine, [SHARDED.name])) as worker:
        for _ in range(3):
            clock.advance(IDLE_WAIT)
            await settle()
        await engine.resume(SHARDED.name)
        await gates.until(lambda: len(gates.ended) == 3)
    said = [
        r.getMessage() for r in caplog.records if "paused" in r.getMessage() or "resumed" in r.getMessage()
    ]
    assert said == [
        f"worker {worker.worker_id}: queue {SHARDED.name} is paused; its jobs wait until it is resumed",
        f"worker {worker.worker_id}: queue {SHARDED.name} was resumed",
    ]


async def test_a_worker_of_two_queues_drains_the_one_not_paused(engine: FakeEngine, gates: Gates) -> None:
    await engine.pause(QUEUE_A)
    await engine.dispatch_many([OnA({"tag": f"a{n}"}) for n in range(100)])
    await engine.dispatch_many([OnB({"tag": f"b{n}"}) for n in range(30)])
    # A comes first and holds as many jobs as a claim round asks for: its share of the round
    # that finds it paused goes to B at once.
    async with running(worker_of(engine, [QUEUE_A, QUEUE_B], concurrency=100, batch_size=100)):
        await gates.until(lambda: len(gates.ended) == 30)
    assert sorted(gates.ended) == sorted(f"b{n}" for n in range(30))
    assert len(engine.in_state("ready", QUEUE_A)) == 100


async def test_a_busy_worker_picks_up_a_resumed_queue_after_the_recheck(
    engine: FakeEngine, gates: Gates
) -> None:
    clock = engine.clock
    await engine.pause(QUEUE_A)
    await engine.dispatch(OnA({"tag": "a"}))
    await engine.dispatch_many([OnB({"tag": f"b{n}", "gated": True}) for n in range(6)])
    async with running(worker_of(engine, [QUEUE_A, QUEUE_B], concurrency=2)):
        await gates.until(lambda: len(gates.started) == 2)
        await engine.resume(QUEUE_A)
        gates.open("b0")
        await gates.until(lambda: len(gates.started) == 3)
        assert gates.started[-1] == "b2", "the paused queue is held back until the recheck"
        clock.advance(PAUSED_RECHECK)
        gates.open("b1")
        await gates.until(lambda: len(gates.started) == 4)
        assert gates.started[-1] == "a", "after PAUSED_RECHECK the resumed queue is claimed from"
        for n in range(6):
            gates.open(f"b{n}")
        await gates.until(lambda: len(gates.ended) == 7)


async def test_a_burst_worker_ends_leaving_a_paused_queue_s_jobs(
    engine: FakeEngine, gates: Gates, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.dispatch_many([OnA({"tag": "a"}), OnB({"tag": "b"})])
    await engine.pause(QUEUE_A)
    with anyio.fail_after(LIMIT), caplog.at_level(logging.INFO, logger="aiojobs_redis.worker"):
        assert await engine.run_due([QUEUE_A, QUEUE_B]) == 1
    assert gates.ended == ["b"]
    # Its last line says why jobs were left behind.
    assert any(
        f"no ready jobs left (burst) in the queues not paused; paused (their jobs wait): {QUEUE_A}"
        in r.message
        for r in caplog.records
    )
    await engine.resume(QUEUE_A)
    with anyio.fail_after(LIMIT):
        assert await engine.run_due([QUEUE_A, QUEUE_B]) == 1
    assert gates.ended == ["b", "a"]


async def test_a_sharded_queue_pauses_and_resumes_with_every_shard(engine: FakeEngine, gates: Gates) -> None:
    await engine.dispatch_many([OnSharded({"tag": f"s{n}"}) for n in range(6)])
    assert await engine.pause(SHARDED.name) is True
    assert await engine.paused([SHARDED.name, *SHARDED.names]) == [True] * 4
    with anyio.fail_after(LIMIT):
        assert await engine.run_due([SHARDED.name]) == 0
    assert await engine.resume(SHARDED.name) is True
    assert await engine.paused(SHARDED.names) == [False] * 3
    with anyio.fail_after(LIMIT):
        assert await engine.run_due([SHARDED.name]) == 6


async def test_module_level_pause_and_resume_use_the_current_engine(engine: FakeEngine) -> None:
    with use_engine(engine):
        assert await aiojobs_redis.pause(QUEUE_A) is True
        assert await engine.paused([QUEUE_A]) == [True]
        assert await aiojobs_redis.resume(QUEUE_A) is True
        assert await engine.paused([QUEUE_A]) == [False]
        with pytest.raises(InvalidQueueName):
            await aiojobs_redis.pause("no spaces")
    assert engine.calls["pause"] == 1, "an invalid name reaches no engine"


async def test_the_sync_engine_cannot_pause_a_queue_and_says_why() -> None:
    with use_engine(SyncEngine()), pytest.raises(ConfigurationError, match="SyncEngine cannot pause queues"):
        await aiojobs_redis.pause(QUEUE_A)
    why = "runs each job when it is dispatched"
    with use_engine(SyncEngine()), pytest.raises(ConfigurationError, match=why):
        await aiojobs_redis.resume(QUEUE_A)
