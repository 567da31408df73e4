"""A middleware for the worker command's --middleware (jobapp.mw:noting): it records each
run it wraps in Redis, as jobapp's handlers do, under ``<prefix>e2e:middleware`` (a list of
"<job id> before", "<job id> after" or "<job id> skipped"), and skips the jobs whose payload
says so."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from aiojobs_redis import JobContext

from . import DEFAULT_URL


def middleware_key(prefix: str) -> str:
    return f"{prefix}e2e:middleware"


async def noting(ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    assert ctx.job is not None
    if ctx.job.payload.get("skip"):
        await _note(ctx.job_id, "skipped")
        return None
    await _note(ctx.job_id, "before")
    returned = await call_next()
    await _note(ctx.job_id, "after")
    return returned


async def _note(job_id: str, what: str) -> None:
    client = Redis.from_url(os.environ.get("REDIS_URL", DEFAULT_URL))
    async with client:
        await client.rpush(middleware_key(os.environ["REDIS_JOB_PREFIX"]), f"{job_id} {what}")
