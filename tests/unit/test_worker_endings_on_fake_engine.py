"""How a run's end is reported on the FakeEngine: on_exhausted after the failure is recorded,
runs cut short counted lost whatever listens, and the observers an engine offers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import anyio
import pytest

from aiojobs_redis import Hooks, Job, RedisEngine, Worker, registry
from aiojobs_redis.events import RedisTelemetry
from aiojobs_redis.hooks import JobContext
from aiojobs_redis.lifecycle import Observer
from aiojobs_redis.runner import call_on_exhausted
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "endings"
LIMIT = 5  # seconds of real time any test may take: a guard, never a wait


class Seen:
    """What the jobs and hooks of one test did; `until()` waits without polling."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.started = 0
        self.exhausted = anyio.Event()
        self._changed = anyio.Event()

    def note(self, event: str) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, predicate: Any) -> None:
        while not predicate():
            await self._changed.wait()

    def after(self, ctx: JobContext) -> None:
        self.note(f"after {ctx.result}")


class Hanging(Job):
    """Fails for good; its on_exhausted never returns."""

    queue = QUEUE
    attempts = 1
    seen: ClassVar[Seen] = Seen()

    async def handle(self) -> None:
        raise ValueError("no")

    async def on_exhausted(self, exc: BaseException) -> None:
        self.seen.note("on_exhausted")
        self.seen.exhausted.set()
        await anyio.sleep_forever()


class SlowToGiveUp(Hanging):
    timeout = 0.001  # handle() fails at once; on_exhausted runs past this

    async def on_exhausted(self, exc: BaseException) -> None:
        await anyio.sleep_forever()


class Endless(Job):
    queue = QUEUE
    seen: ClassVar[Seen] = Seen()

    async def handle(self) -> None:
        self.seen.started += 1
        self.seen.note("started")
        await anyio.sleep_forever()


@pytest.fixture
def seen() -> Seen:
    Hanging.seen = Endless.seen = Seen()
    return Hanging.seen


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(FakeClock())


def make_worker(engine: FakeEngine, **options: Any) -> Worker:
    options = {"lease": 3.0, "reap_interval": 1000, "promote_interval": 1000, "idle_wait": 1000, **options}
    return Worker(engine, [QUEUE], clock=engine.clock, tracing=False, **options)


async def test_a_hanging_on_exhausted_runs_after_the_failure_is_reported_and_is_cut_by_the_drain(
    engine: FakeEngine, seen: Seen
) -> None:
    (job_id,) = await engine.dispatch_many([Hanging({})])
    worker = make_worker(engine, grace=0.2, telemetry=False, hooks=Hooks(after=[seen.after]))
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await seen.exhausted.wait()
            assert engine.jobs[job_id].state == "failed"
            assert seen.events == ["after failed", "on_exhausted"]
            worker.stop()
            await engine.clock.wait_for_timer(0.2)
            engine.clock.advance(0.2)
    assert worker.running_count == 0
    assert (worker.counters.failed, worker.counters.lost) == (1, 0)


async def test_on_exhausted_past_the_job_s_timeout_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = SlowToGiveUp({})
    with anyio.fail_after(LIMIT):
        await call_on_exhausted(job, ValueError("no"))
    assert "on_exhausted() ran past the job's timeout of 0.001 s" in caplog.text


@pytest.mark.parametrize("listening", [False, True], ids=["nothing-listens", "hooks-and-observers"])
async def test_runs_cut_short_are_counted_lost_alike_and_said_in_one_line(
    engine: FakeEngine, seen: Seen, caplog: pytest.LogCaptureFixture, listening: bool
) -> None:
    await engine.dispatch_many([Endless({}) for _ in range(3)])
    options: dict[str, Any] = (
        {"hooks": Hooks(after=[seen.after]), "telemetry": Spy()} if listening else {"telemetry": False}
    )
    worker = make_worker(engine, **options)
    caplog.set_level(logging.WARNING, "aiojobs_redis")
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await seen.until(lambda: seen.started == 3)
            tg.cancel_scope.cancel()  # a hard stop: no drain, no release
    assert worker.counters.lost == 3
    lines = [r.getMessage() for r in caplog.records if "before their outcome was recorded" in r.getMessage()]
    assert len(lines) == 1 and "3 job(s)" in lines[0]


class Spy(Observer):
    def __init__(self) -> None:
        self.ended: list[str | None] = []

    def job_ended(self, ctx: JobContext) -> None:
        self.ended.append(ctx.result)


class OffersObservers(FakeEngine):
    def __init__(self, offered: Sequence[Observer]) -> None:
        super().__init__()
        self.offered = list(offered)

    def default_observers(self) -> list[Observer]:
        return self.offered


def test_telemetry_true_takes_the_engine_s_default_observers() -> None:
    spy, mine = Spy(), Spy()
    engine = OffersObservers([spy])
    assert Worker(engine).lifecycle.observers == [spy]
    assert Worker(engine, telemetry=False).lifecycle.observers == []
    assert Worker(engine, telemetry=mine).lifecycle.observers == [mine]
    assert Worker(FakeEngine()).lifecycle.observers == [], "an engine that offers none: none"


def test_a_redis_engine_offers_its_event_stream() -> None:
    (observer,) = RedisEngine().default_observers()
    assert isinstance(observer, RedisTelemetry)


def test_job_classes_here_are_registered() -> None:
    assert registry.lookup(Hanging.name) is Hanging and registry.lookup(Endless.name) is Endless
