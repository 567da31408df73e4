"""`aiojobs-redis work --middleware MODULE:NAME`: a real worker subprocess on the real Redis."""

from __future__ import annotations

import pytest
from jobapp import Count
from jobapp.mw import middleware_key
from redis.asyncio import Redis
from test_cli import runs_of, stats, work

from aiojobs_redis import RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_work_runs_the_middleware_given_around_each_job_and_it_may_skip_one(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    ran = await Count().dispatch({})
    skipped = await Count().dispatch({"skip": True})

    result = await work(prefix, redis_url, "--burst", "--middleware", "jobapp.mw:noting")

    assert result.returncode == 0, result
    assert await runs_of(raw_redis, prefix) == (1, {ran: 1}), "handle() ran for the one not skipped"
    stored: list[bytes] = await raw_redis.lrange(middleware_key(prefix), 0, -1)  # type: ignore[assignment]
    notes = [note.decode() for note in stored]
    assert [n for n in notes if n.startswith(ran)] == [f"{ran} before", f"{ran} after"]
    assert [n for n in notes if n.startswith(skipped)] == [f"{skipped} skipped"]
    assert (await stats(prefix, redis_url))["default"] == (0, 0, 0, 0), "both done"


async def test_work_with_a_middleware_it_cannot_find_exits_1_saying_so(prefix: str, redis_url: str) -> None:
    result = await work(prefix, redis_url, "--burst", "--middleware", "jobapp.mw:nothing_here")

    assert result.returncode == 1, result
    assert "aiojobs-redis: error: --middleware jobapp.mw:nothing_here: jobapp.mw has no 'nothing_here'" in (
        result.stderr
    ), result
