"""Lifecycle hooks around real jobs on a real worker, and the OpenTelemetry span per run."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import anyio
import pytest
from support.dashkit import running_worker
from support.wait import eventually

from aiojobs_redis import Job, PermanentFailure, RedisEngine
from aiojobs_redis.hooks import Hooks, JobContext, Observer
from aiojobs_redis.metrics import JobTracer

pytestmark = pytest.mark.anyio

QUEUE = "hooked"


class Log:
    """What hooks and handlers saw, in order."""

    entries: ClassVar[list[tuple[str, str, int, str | None, str | None]]] = []

    @classmethod
    def add(cls, kind: str, ctx: JobContext) -> None:
        error = None if ctx.error is None else type(ctx.error).__name__
        cls.entries.append((kind, ctx.name.rsplit(".", 1)[-1], ctx.attempt, ctx.result, error))


class Fine(Job):
    queue = QUEUE

    async def handle(self) -> None:
        await anyio.sleep(0.01)


class FlakyOnce(Job):
    queue = QUEUE
    attempts = 2

    async def handle(self) -> None:
        if self.attempt == 1:
            raise ValueError("first try fails")


class Doomed(Job):
    queue = QUEUE
    attempts = 5

    async def handle(self) -> None:
        raise PermanentFailure("never")


@pytest.fixture(autouse=True)
def fresh_log() -> Iterator[None]:
    Log.entries = []
    yield


async def run_until(engine: RedisEngine, hooks: Hooks, done: int, **options: Any) -> None:
    async with running_worker(engine, [QUEUE], hooks=hooks, **options) as worker:
        counters = worker.counters

        async def settled() -> bool:
            return counters.succeeded + counters.failed >= done

        await eventually(settled, what=f"{done} jobs to end")


async def test_hooks_see_each_run_in_order_with_its_result(engine: RedisEngine) -> None:
    hooks = Hooks()
    durations: list[float] = []

    @hooks.before
    def before(ctx: JobContext) -> None:  # a plain function
        ctx.state["token"] = f"t-{ctx.job_id}"
        Log.add("before", ctx)

    @hooks.after
    async def after(ctx: JobContext) -> None:  # a coroutine function
        assert ctx.state["token"] == f"t-{ctx.job_id}", "state carries from before to after"
        assert ctx.duration is not None
        durations.append(ctx.duration)
        Log.add("after", ctx)

    @hooks.on_failure
    async def failure(ctx: JobContext) -> None:
        Log.add("on_failure", ctx)

    assert before.__name__ == "before", "the decorator returns the hook"
    await Fine().dispatch({})
    await run_until(engine, hooks, 1)
    await FlakyOnce().dispatch({})
    await run_until(engine, hooks, 1)
    await Doomed().dispatch({})
    await run_until(engine, hooks, 1)

    assert Log.entries == [
        ("before", "Fine", 1, None, None),
        ("after", "Fine", 1, "succeeded", None),
        ("before", "FlakyOnce", 1, None, None),
        ("on_failure", "FlakyOnce", 1, "retried", "ValueError"),
        ("after", "FlakyOnce", 1, "retried", "ValueError"),
        ("before", "FlakyOnce", 2, None, None),
        ("after", "FlakyOnce", 2, "succeeded", None),
        ("before", "Doomed", 1, None, None),
        ("on_failure", "Doomed", 1, "failed", "PermanentFailure"),
        ("after", "Doomed", 1, "failed", "PermanentFailure"),
    ]
    assert durations[0] >= 0.01, "Fine sleeps 10 ms in handle()"


async def test_hooks_given_to_the_constructor(engine: RedisEngine) -> None:
    def seen(kind: str) -> Any:
        return lambda ctx: Log.add(kind, ctx)

    hooks = Hooks(before=[seen("b1"), seen("b2")], after=[seen("a")], on_failure=[seen("f")])
    assert repr(hooks) == "<Hooks before=2 after=1 on_failure=1 timeout=30.0>"
    await Fine().dispatch({})
    await run_until(engine, hooks, 1)
    assert [e[0] for e in Log.entries] == ["b1", "b2", "a"]


async def test_a_raising_hook_is_logged_and_never_breaks_the_job(
    engine: RedisEngine, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks()

    @hooks.before
    def explode(ctx: JobContext) -> None:
        raise RuntimeError("hook bug")

    @hooks.after
    async def explode_later(ctx: JobContext) -> None:
        raise KeyError("another")

    @hooks.after
    def still_runs(ctx: JobContext) -> None:
        Log.add("after", ctx)

    job_id = await Fine().dispatch({})
    await run_until(engine, hooks, 1)
    [stats] = await engine.stats(QUEUE)
    assert (stats.ready, stats.running, stats.failed) == (0, 0, 0), "the job succeeded"
    assert Log.entries == [("after", "Fine", 1, "succeeded", None)]
    raised = [r.getMessage() for r in caplog.records if "raised for job" in r.getMessage()]
    assert len(raised) == 2
    assert "before hook" in raised[0] and job_id in raised[0] and "the job is unaffected" in raised[0]
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


async def test_a_hook_past_its_timeout_is_cancelled(
    engine: RedisEngine, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks(timeout=0.05)

    @hooks.before
    async def stuck(ctx: JobContext) -> None:
        await anyio.sleep(60)

    await Fine().dispatch({})
    with anyio.fail_after(5):
        await run_until(engine, hooks, 1)
    assert any("ran past 0.05 s" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


class Spy(Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, bool]] = []

    def job_started(self, ctx: JobContext) -> None:
        self.seen.append(("started", ctx.result, ctx.job is not None))

    def job_ended(self, ctx: JobContext) -> None:
        self.seen.append(("ended", ctx.result, ctx.job is not None))


async def test_an_unrunnable_record_reaches_observers_but_not_hooks(engine: RedisEngine) -> None:
    keys = engine.keys(QUEUE)
    await engine.redis.hset(
        keys.job("ghost"), mapping={"n": "no.such.Job", "q": QUEUE, "p": "{}", "s": "ready", "m": 1, "a": 0}
    )
    await engine.redis.rpush(keys.ready, "ghost")
    hooks = Hooks(before=[lambda ctx: Log.add("before", ctx)], after=[lambda ctx: Log.add("after", ctx)])
    spy = Spy()
    async with running_worker(engine, [QUEUE], hooks=hooks, unknown_job_grace=0) as worker:
        worker.lifecycle.observers.append(spy)
        await Fine().dispatch({})

        async def both() -> bool:
            return worker.counters.succeeded + worker.counters.failed >= 2

        await eventually(both, what="both jobs to end")
    assert ("ended", "failed", False) in spy.seen, "the unknown name failed without becoming a Job"
    assert ("started", None, True) in spy.seen and ("ended", "succeeded", True) in spy.seen
    assert [e[:2] for e in Log.entries] == [("before", "Fine"), ("after", "Fine")]
    assert not worker.lifecycle.running, "nothing left behind"


# -- OpenTelemetry -----------------------------------------------------------------------------


class FakeSpan:
    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name, self.attributes = name, dict(attributes)
        self.exceptions: list[BaseException] = []
        self.status: Any = None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def record_exception(self, exc: BaseException) -> None:
        self.exceptions.append(exc)

    def set_status(self, status: Any) -> None:
        self.status = status


class FakeTracer:
    """Records the spans JobTracer starts (the API's no-op tracer records nothing to check)."""

    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []

    @contextmanager
    def start_as_current_span(self, name: str, **options: Any) -> Iterator[FakeSpan]:
        span = FakeSpan(name, options.get("attributes") or {})
        span.attributes["kind"] = options["kind"].name
        self.spans.append(span)
        yield span


async def test_one_span_per_run_with_the_failure_recorded(engine: RedisEngine) -> None:
    from opentelemetry.trace import Tracer

    fake = FakeTracer()
    async with running_worker(engine, [QUEUE]) as worker:
        worker.lifecycle.tracer = JobTracer(cast(Tracer, fake))
        ok_id = await Fine().dispatch({})
        await FlakyOnce().dispatch({})

        async def done() -> bool:
            return worker.counters.succeeded >= 2

        await eventually(done, what="two jobs to succeed")
    names = sorted(s.name.rsplit(".", 1)[-1] for s in fake.spans)
    assert names == ["Fine", "FlakyOnce", "FlakyOnce"]
    fine = next(s for s in fake.spans if s.name.endswith("Fine"))
    assert fine.attributes["messaging.message.id"] == ok_id
    assert fine.attributes["messaging.destination.name"] == QUEUE
    assert fine.attributes["aiojobs_redis.job.attempt"] == 1
    assert fine.attributes["kind"] == "CONSUMER"
    assert fine.status is None and not fine.exceptions
    failed = next(s for s in fake.spans if s.exceptions)
    assert isinstance(failed.exceptions[0], ValueError)
    assert failed.status.status_code.name == "ERROR"
    assert failed.attributes["aiojobs_redis.job.attempt"] == 1


def test_tracing_is_a_no_op_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert JobTracer.if_available() is not None
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert JobTracer.if_available() is None


async def test_spans_wait_for_a_configured_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from aiojobs_redis.runner import Outcome

    async def ok() -> Outcome:
        return Outcome()

    ctx = JobContext(worker_id="w", queue=QUEUE, job_id="j1", name="x.Job", attempt=1, max_attempts=1)
    fake = FakeTracer()
    await JobTracer(cast(trace.Tracer, fake), only_when_configured=True).trace(ctx, ok)
    assert fake.spans == [], "with the API's default provider every span would be a no-op: none is made"
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: object())  # as once an SDK is set up
    await JobTracer(cast(trace.Tracer, fake), only_when_configured=True).trace(ctx, ok)
    assert [s.name for s in fake.spans] == ["x.Job"]
