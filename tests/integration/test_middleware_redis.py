"""Middleware in a worker on the real Redis: order, a skip's kept result, and failures
raised by middleware recorded as handle()'s would be."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from aiojobs_redis import Hooks, Job, JobContext, PermanentFailure, RedisEngine, Worker

pytestmark = pytest.mark.anyio

QUEUE = "mw-redis"
LIMIT = 30  # seconds: a guard, never a wait
Next = Callable[[], Awaitable[Any]]
seen: list[str] = []


def noting(label: str) -> Callable[[JobContext, Next], Awaitable[Any]]:
    async def middleware(ctx: JobContext, call_next: Next) -> Any:
        assert ctx.job is not None
        seen.append(f"{label} {ctx.job.payload['n']}")
        if ctx.job.payload.get(label) == "skip":
            return {"skipped by": label}
        if ctx.job.payload.get(label) == "perm":
            raise PermanentFailure(f"{label} refused")
        if ctx.job.payload.get(label) == "error":
            raise ConnectionError(f"{label} lost it")
        returned = await call_next()
        seen.append(f"{label} exit {ctx.job.payload['n']}")
        return returned

    return middleware


class Wrapped(Job):
    name = "middleware_redis.Wrapped"
    queue = QUEUE
    attempts = 2
    retry_after = "+1 hour"
    keep_result = "+1 hour"
    middleware = (noting("inner"),)

    async def handle(self) -> Any:
        seen.append(f"handle {self.payload['n']}")
        return self.payload["n"] * 10


@asynccontextmanager
async def running_worker(engine: RedisEngine, **options: Any) -> AsyncIterator[Worker]:
    worker = Worker(engine, [QUEUE], idle_wait=1, **options)
    async with anyio.create_task_group() as group:
        await group.start(worker.run)
        yield worker
        worker.stop()


async def test_middleware_order_results_and_failures_on_redis(engine: RedisEngine) -> None:
    seen.clear()
    plain = await Wrapped.dispatch({"n": 1})
    skipped = await Wrapped.dispatch({"n": 2, "inner": "skip"})
    refused = await Wrapped.dispatch({"n": 3, "outer": "perm"})
    retried = await Wrapped.dispatch({"n": 4, "inner": "error"})
    ended: list[str] = []
    all_ended = anyio.Event()

    def after(ctx: JobContext) -> None:
        ended.append(ctx.job_id)
        if len(ended) == 4:
            all_ended.set()

    hooks = Hooks(after=[after])
    with anyio.fail_after(LIMIT):
        async with running_worker(engine, concurrency=1, middleware=[noting("outer")], hooks=hooks):
            assert await Wrapped.ref(plain).result(timeout=LIMIT) == 10
            assert await Wrapped.ref(skipped).result(timeout=LIMIT) == {"skipped by": "inner"}
            await all_ended.wait()
    assert seen[:5] == ["outer 1", "inner 1", "handle 1", "inner exit 1", "outer exit 1"]
    assert "handle 2" not in seen and "handle 3" not in seen and "handle 4" not in seen
    failed = await engine.get_job(QUEUE, refused)
    assert failed is not None and (failed.state, failed.attempts) == ("failed", 1)
    assert failed.error is not None and (failed.error["reason"], failed.error["message"]) == (
        "permanent",
        "outer refused",
    )
    later = await engine.get_job(QUEUE, retried)
    assert later is not None and (later.state, later.attempts) == ("delayed", 1)
    assert later.error is not None and later.error["type"] == "builtins.ConnectionError"
