"""`Hooks` comes from the package top level, and is what a worker takes as `hooks=`."""

from __future__ import annotations

import anyio
import pytest

import aiojobs_redis
from aiojobs_redis import Hooks, Job, RedisEngine, Worker
from aiojobs_redis import hooks as hooks_module
from aiojobs_redis.hooks import JobContext

pytestmark = pytest.mark.anyio


class Greeted(Job):
    queue = "greeted"

    async def handle(self) -> None:
        return None


def test_hooks_is_exported_from_the_top_level() -> None:
    assert Hooks is hooks_module.Hooks
    assert "Hooks" in aiojobs_redis.__all__
    namespace: dict[str, object] = {}
    exec("from aiojobs_redis import *", namespace)
    assert namespace["Hooks"] is hooks_module.Hooks


async def test_a_worker_runs_the_hooks_given_as_the_top_level_class(engine: RedisEngine) -> None:
    seen: list[tuple[str, str, str | None]] = []

    def before(ctx: JobContext) -> None:
        seen.append(("before", ctx.job_id, ctx.result))

    async def after(ctx: JobContext) -> None:
        seen.append(("after", ctx.job_id, ctx.result))

    ids = [await Greeted({}).dispatch() for _ in range(3)]
    worker = Worker(engine, ["greeted"], burst=True, hooks=Hooks(before=[before], after=[after]))
    with anyio.fail_after(20):
        await worker.run()
    assert sorted(seen) == sorted(
        [("before", i, None) for i in ids] + [("after", i, "succeeded") for i in ids]
    )
