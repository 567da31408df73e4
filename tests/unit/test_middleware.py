"""Middleware around handle() on the FakeEngine and the SyncEngine: order, outcomes, skipping,
timeouts, cancellation, context variables, and the checks on what is given as middleware."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

import anyio
import pytest
from test_worker_on_fake_engine import running

from aiojobs_redis import (
    Hooks,
    InvalidMiddleware,
    Job,
    JobContext,
    Middleware,
    PermanentFailure,
    RetryLater,
    SyncEngine,
    Worker,
    use_engine,
)
from aiojobs_redis.middleware import Chains, load
from aiojobs_redis.runner import run_handler
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "mw"
LIMIT = 5  # seconds of real time any test may take: a guard, never a wait
Next = Callable[[], Awaitable[Any]]


class Ledger:
    """What the middleware and handlers did, in order; `until()` waits without polling."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = anyio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, line: str) -> None:
        while line not in self.lines:
            await self._changed.wait()


ledger = Ledger()


@pytest.fixture(autouse=True)
def fresh_ledger() -> Iterator[Ledger]:
    global ledger
    ledger = Ledger()
    yield ledger


def noting(label: str) -> Middleware:
    async def middleware(ctx: JobContext, call_next: Next) -> Any:
        ledger.add(label)
        try:
            return await call_next()
        finally:
            ledger.add(f"{label} exit")

    middleware.__qualname__ = label
    return middleware


async def raising(ctx: JobContext, call_next: Next) -> Any:
    raise {"value": ValueError, "perm": PermanentFailure, "later": RetryLater}[ctx.job.payload["raise"]](  # type: ignore[union-attr]
        "from middleware"
    )


async def swallowing(ctx: JobContext, call_next: Next) -> Any:
    try:
        return await call_next()
    except ValueError as exc:
        ledger.add(f"swallowed {exc}")
        return "recovered"


async def skipping(ctx: JobContext, call_next: Next) -> Any:
    return {"skipped": True, "job_id": ctx.job_id, "attempt": ctx.attempt}


async def twice(ctx: JobContext, call_next: Next) -> Any:
    await call_next()
    return await call_next()


async def sleeping(ctx: JobContext, call_next: Next) -> Any:
    ledger.add("sleeping")
    try:
        await anyio.sleep_forever()
    finally:
        ledger.add("sleeping finally")
    return await call_next()  # pragma: no cover - never reached


tenant: ContextVar[str] = ContextVar("tenant")


async def with_tenant(ctx: JobContext, call_next: Next) -> Any:
    assert ctx.job is not None
    token = tenant.set(ctx.job.payload["tenant"])
    try:
        return await call_next()
    finally:
        tenant.reset(token)


class Ledgered(Job):
    """Notes its run; raises what its payload asks for."""

    name = "middleware.Ledgered"
    queue = QUEUE
    attempts = 3
    retry_after = "+30 seconds"
    keep_result = "+1 hour"
    middleware = (noting("inner"),)

    async def handle(self) -> Any:
        ledger.add("handle")
        if self.payload.get("fail"):
            raise ValueError("from handle")
        return self.payload.get("value")


class Plainly(Job):
    name = "middleware.Plainly"
    queue = QUEUE
    attempts = 3
    retry_after = "+30 seconds"
    keep_result = "+1 hour"

    async def handle(self) -> Any:
        ledger.add("handle")
        return "handled"


class RaisedAround(Plainly):
    name = "middleware.RaisedAround"
    middleware = (raising,)


class Swallowed(Plainly):
    name = "middleware.Swallowed"
    middleware = (swallowing,)

    async def handle(self) -> Any:
        ledger.add("handle")
        raise ValueError("boom")


class Skipped(Plainly):
    name = "middleware.Skipped"
    middleware = (skipping,)


class CalledTwice(Plainly):
    name = "middleware.CalledTwice"
    attempts = 1
    middleware = (twice,)


class SlowAround(Plainly):
    name = "middleware.SlowAround"
    attempts = 1
    timeout = 0.05
    middleware = (sleeping,)


class Tenanted(Plainly):
    name = "middleware.Tenanted"
    middleware = (with_tenant,)

    async def handle(self) -> Any:
        return tenant.get()


class Hanging(Plainly):
    """Its middleware waits until cancelled (abort, a stopping worker)."""

    name = "middleware.Hanging"
    middleware = (sleeping,)


class LedgeredChild(Ledgered):
    """Inherits its parent's middleware, as any class attribute."""

    name = "middleware.LedgeredChild"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(FakeClock())


async def run_due(engine: FakeEngine, **options: Any) -> int:
    with anyio.fail_after(LIMIT):
        return await engine.run_due([QUEUE], **options)


def make_worker(engine: FakeEngine, **options: Any) -> Worker:
    options = {"lease": 3.0, "reap_interval": 1000, "promote_interval": 1000, "idle_wait": 1000, **options}
    return Worker(engine, [QUEUE], clock=engine.clock, telemetry=False, tracing=False, **options)


# -- order ------------------------------------------------------------------------------------


async def test_worker_middleware_wraps_the_class_s_which_wraps_handle_and_hooks_stay_outside(
    engine: FakeEngine,
) -> None:
    hooks = Hooks(
        before=[lambda ctx: ledger.add("before hook")], after=[lambda ctx: ledger.add("after hook")]
    )
    await engine.dispatch(Ledgered({"value": 7}))
    assert await run_due(engine, middleware=[noting("outer"), noting("middle")], hooks=hooks) == 1
    assert ledger.lines == [
        "before hook",
        "outer",
        "middle",
        "inner",
        "handle",
        "inner exit",
        "middle exit",
        "outer exit",
        "after hook",
    ]
    (job,) = engine.in_state("done")
    assert await engine.result(QUEUE, job.id) == 7


async def test_middleware_gets_the_run_s_context_with_no_hooks_or_observers(engine: FakeEngine) -> None:
    seen: list[JobContext] = []

    async def looking(ctx: JobContext, call_next: Next) -> Any:
        seen.append(ctx)
        return await call_next()

    (job_id,) = await engine.dispatch_many([Plainly({"p": 1})])
    await run_due(engine, middleware=[looking])
    (ctx,) = seen
    assert ctx.job is not None and ctx.job.payload == {"p": 1} and ctx.job.id == job_id
    assert (ctx.queue, ctx.job_id, ctx.name, ctx.attempt, ctx.max_attempts) == (
        QUEUE,
        job_id,
        "middleware.Plainly",
        1,
        3,
    )
    assert ctx.started_ms > 0


async def test_a_subclass_inherits_its_parent_s_middleware_and_each_chain_is_composed_once(
    engine: FakeEngine,
) -> None:
    outer = noting("outer")
    worker = make_worker(engine, burst=True, middleware=[outer])
    await engine.dispatch_many([LedgeredChild({}), LedgeredChild({}), Plainly({})])
    with anyio.fail_after(LIMIT):
        await worker.run()
    assert ledger.lines.count("inner") == 2 and ledger.lines.count("outer") == 3
    assert worker._chains == {LedgeredChild: (outer, *Ledgered.middleware), Plainly: (outer,)}


# -- outcomes ---------------------------------------------------------------------------------


async def test_an_exception_from_middleware_is_retried_as_the_retry_policy_says(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([RaisedAround({"raise": "value"})])
    await run_due(engine)
    job = engine.jobs[job_id]
    assert (job.state, job.attempts, job.due_ms - engine.clock.now_ms) == ("delayed", 1, 30_000)
    assert job.error is not None and job.error["type"] == "builtins.ValueError"
    assert "handle" not in ledger.lines


async def test_retry_later_from_middleware_retries_after_its_delay(engine: FakeEngine) -> None:
    async def later(ctx: JobContext, call_next: Next) -> Any:
        raise RetryLater("+2 minutes")

    (job_id,) = await engine.dispatch_many([Plainly({})])
    await run_due(engine, middleware=[later])
    job = engine.jobs[job_id]
    assert (job.state, job.attempts, job.due_ms - engine.clock.now_ms) == ("delayed", 1, 120_000)


async def test_permanent_failure_from_middleware_fails_the_job_after_one_attempt(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([RaisedAround({"raise": "perm"})])
    await run_due(engine)
    job = engine.jobs[job_id]
    assert (job.state, job.attempts) == ("failed", 1)
    assert job.error is not None and job.error["reason"] == "permanent"
    assert job.error["message"] == "from middleware"


async def test_a_middleware_that_catches_the_failure_and_returns_makes_the_run_a_success(
    engine: FakeEngine,
) -> None:
    (job_id,) = await engine.dispatch_many([Swallowed({})])
    await run_due(engine)
    assert engine.jobs[job_id].state == "done" and ledger.lines == ["handle", "swallowed boom"]
    assert await engine.result(QUEUE, job_id) == "recovered"


async def test_returning_without_call_next_skips_handle_and_the_returned_value_is_the_result(
    engine: FakeEngine,
) -> None:
    (job_id,) = await engine.dispatch_many([Skipped({})])
    await run_due(engine)
    assert engine.jobs[job_id].state == "done" and "handle" not in ledger.lines
    assert await engine.result(QUEUE, job_id) == {"skipped": True, "job_id": job_id, "attempt": 1}


async def test_calling_call_next_twice_raises_runtime_error_and_fails_the_job(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([CalledTwice({})])
    await run_due(engine)
    job = engine.jobs[job_id]
    assert ledger.lines == ["handle"], "handle() ran once"
    assert job.state == "failed" and job.error is not None
    assert job.error["type"] == "builtins.RuntimeError"
    assert "call_next() was called twice by middleware twice" in job.error["message"]


async def test_the_timeout_covers_the_chain_and_cancels_a_sleeping_middleware(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([SlowAround({})])
    await run_due(engine)
    job = engine.jobs[job_id]
    assert ledger.lines == ["sleeping", "sleeping finally"]
    assert job.state == "failed" and job.error is not None and job.error["reason"] == "timeout"
    assert "handle() with its middleware ran past its timeout of 0.05 s" in job.error["message"]


async def test_a_context_variable_set_by_middleware_is_seen_by_handle(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([Tenanted({"tenant": "acme"})])
    await run_due(engine)
    assert await engine.result(QUEUE, job_id) == "acme"
    assert tenant.get("unset") == "unset", "reset by the middleware"


# -- cancellation -----------------------------------------------------------------------------


async def test_an_abort_reaches_the_middleware_as_a_cancellation(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([Hanging({})])
    async with running(make_worker(engine, abort_check=0.5)) as worker:
        await ledger.until("sleeping")
        assert await engine.abort(job_id) is True
        engine.clock.advance(0.5)
        await ledger.until("sleeping finally")
    assert worker.counters.aborted == 1 and engine.jobs[job_id].state == "failed"


async def test_a_stopping_worker_s_cancellation_reaches_the_middleware_and_the_job_is_handed_back(
    engine: FakeEngine,
) -> None:
    (job_id,) = await engine.dispatch_many([Hanging({})])
    async with running(make_worker(engine, grace=10)) as worker:
        await ledger.until("sleeping")
        worker.stop()
        await engine.clock.wait_for_timer(10)
        engine.clock.advance(10)
    assert ledger.lines == ["sleeping", "sleeping finally"]
    job = engine.jobs[job_id]
    assert (worker.counters.released, job.state, job.attempts) == (1, "ready", 0)


# -- SyncEngine -------------------------------------------------------------------------------


async def test_the_sync_engine_runs_its_middleware_and_each_class_s() -> None:
    engine = SyncEngine(middleware=[noting("outer")])
    with use_engine(engine):
        job_id = await Ledgered.dispatch({"value": 3})
        skipped = await Skipped.dispatch({})
    assert ledger.lines == ["outer", "inner", "handle", "inner exit", "outer exit", "outer", "outer exit"]
    assert engine.results == {job_id: 3, skipped: {"skipped": True, "job_id": skipped, "attempt": 1}}


async def test_the_sync_engine_classifies_middleware_failures_as_a_worker_does() -> None:
    engine = SyncEngine(raise_on_failure=False)
    with use_engine(engine):
        await RaisedAround.dispatch({"raise": "value"})
        await RaisedAround.dispatch({"raise": "perm"})
        await SlowAround.dispatch({})
    assert [(f.attempts, f.reason) for f in engine.failed] == [(3, "error"), (1, "permanent"), (1, "timeout")]


async def test_a_sync_engine_without_middleware_runs_only_the_class_s() -> None:
    with use_engine(SyncEngine()):
        await Tenanted.dispatch({"tenant": "t1"})
        with pytest.raises(RuntimeError, match="called twice"):
            await CalledTwice.dispatch({})


# -- what is given as middleware ----------------------------------------------------------------


async def _agen(ctx: JobContext, call_next: Next) -> Any:
    yield await call_next()


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (noting("alone"), "must be a list or tuple of middleware"),
        ("app:mw", "must be a list or tuple of middleware"),
        ([noting("ok"), 42], "42 is not callable"),
        ([_agen], "is a generator"),
    ],
)
def test_worker_and_sync_engine_refuse_what_is_not_middleware(
    engine: FakeEngine, given: Any, says: str
) -> None:
    with pytest.raises(InvalidMiddleware, match=says):
        make_worker(engine, middleware=given)
    with pytest.raises(InvalidMiddleware, match=says):
        SyncEngine(middleware=given)


def test_a_job_class_with_bad_middleware_fails_where_it_is_defined() -> None:
    with pytest.raises(InvalidMiddleware, match=r"BadlyWrapped\.middleware: 'x' is not callable"):

        class BadlyWrapped(Job):
            name = "middleware.BadlyWrapped"
            middleware = ("x",)  # type: ignore[assignment]

            async def handle(self) -> None:
                return None


def test_a_list_of_middleware_on_a_class_becomes_a_tuple() -> None:
    class Listed(Job):
        name = "middleware.Listed"
        middleware = [swallowing]  # type: ignore[assignment]  # noqa: RUF012

        async def handle(self) -> None:
            return None

    made: Any = Listed.middleware
    assert made == (swallowing,)
    assert Chains((skipping,))[Listed] == (skipping, swallowing)


def test_load_finds_a_middleware_by_module_and_attribute() -> None:
    loaded: list[object] = [load("aiojobs_redis.runner:run_handler"), load("json:JSONEncoder.encode")]
    assert loaded == [run_handler, json.JSONEncoder.encode]  # only callable: never run here


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("json", "takes module:attribute"),
        (":dumps", "takes module:attribute"),
        ("json:", "takes module:attribute"),
        ("no_such_module_here:mw", "cannot import 'no_such_module_here'"),
        ("json:nothing", "has no 'nothing'"),
        ("json:JSONEncoder.nothing", "has no 'JSONEncoder.nothing'"),
        ("json:__name__", "is not callable"),
    ],
)
def test_load_says_what_is_wrong_with_a_spec(spec: str, says: str) -> None:
    with pytest.raises(InvalidMiddleware, match=says):
        load(spec)


class KeepsNothing(Job):
    name = "middleware.KeepsNothing"
    queue = QUEUE
    middleware = (skipping,)

    async def handle(self) -> None:  # pragma: no cover - skipped
        ledger.add("handle")


async def test_a_skipped_job_of_a_class_keeping_no_result_is_just_done(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([KeepsNothing({})])
    await run_due(engine)
    assert engine.jobs[job_id].state == "done" and engine.jobs[job_id].result is None
    assert "handle" not in ledger.lines
