"""Engine calls in the shape tests find handy, over the engine's own API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiojobs_redis import Job, RedisEngine, Settings, use_engine
from aiojobs_redis.keys import QueueKeys
from aiojobs_redis.records import Claim
from support.keyspace import delete_prefix


@asynccontextmanager
async def engine_with(
    settings: Settings, clock: Callable[[], int] | None = None, **changes: Any
) -> AsyncIterator[RedisEngine]:
    """An engine with some settings changed, installed for dispatch, its keys deleted after."""
    custom = settings.with_(**changes)
    try:
        async with RedisEngine(custom, clock=clock) as opened:
            with use_engine(opened):
                yield opened
    finally:
        await delete_prefix(custom.url, custom.prefix, custom.db)


async def claim_from(
    engine: RedisEngine, queue: str, limit: int, *, worker_id: str, request_id: str, lease_ms: int
) -> Claim:
    """One queue's claim (the engine claims from several queues at once: claim_many)."""
    [claim] = await engine.claim_many([(queue, limit, request_id)], worker_id=worker_id, lease_ms=lease_ms)
    return claim


def dispatch_marker(keys: QueueKeys, first_job_id: str) -> str:
    """The key dispatch.lua sets when a call ran (see keys.py), named by the call's first job."""
    return f"{keys.base}:dd:{first_job_id}"


async def fail_new_jobs(
    engine: RedisEngine,
    job: type[Job],
    payloads: Sequence[Any],
    error: Callable[[str], dict[str, Any]],
    *,
    between: Callable[[], object] | None = None,
) -> list[str]:
    """Failed jobs without a worker: dispatch one `job` per payload, claim them all and fail
    each with `error(job_id)`, in dispatch order (the last is the newest failure). `between`
    runs before each fail (a FakeClock's advance, to space the failure times)."""
    ids = await job.dispatch_many(payloads)
    [claim] = await engine.claim_many(
        [(job.queue, len(ids), f"fail-{ids[0]}")], worker_id="w", lease_ms=30_000
    )
    assert [c.id for c in claim.jobs] == ids, "the queue held other jobs"
    for claimed in claim.jobs:
        if between is not None:
            between()
        assert await engine.fail(claimed, error(claimed.id))
    return ids
