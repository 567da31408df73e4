"""`aiojobs-redis abort` as a user runs it: a real subprocess on the real Redis."""

from __future__ import annotations

import pytest
from test_cli import inspect

from aiojobs_redis import Job, RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUEUE = "cli-abort"


class Report(Job):
    queue = QUEUE
    name = "cli.AbortReport"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


async def test_abort_then_failed_list_and_retry(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    job_id = await Report().dispatch({"n": 1})

    result = await inspect(prefix, redis_url, "abort", job_id, "--reason", "not needed any more")
    assert (result.returncode, result.stdout.strip()) == (0, f"aborted {job_id} in {QUEUE} (it was ready)"), (
        result
    )

    result = await inspect(prefix, redis_url, "abort", job_id, "--queue", QUEUE)
    assert result.returncode == 1, result
    assert "it has ended already" in result.stderr, result

    result = await inspect(prefix, redis_url, "failed", "list", "--queue", QUEUE)
    assert job_id in result.stdout and "aborted" in result.stdout, result

    result = await inspect(prefix, redis_url, "failed", "retry", job_id)
    assert result.returncode == 0, result
    assert await engine.stats(QUEUE) and (await engine.stats(QUEUE))[0].ready == 1


async def test_abort_of_an_unknown_job_says_so(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    result = await inspect(prefix, redis_url, "abort", "nosuchjob")
    assert (result.returncode, result.stderr.strip()) == (1, "not aborted: nosuchjob: no such job"), result
    result = await inspect(prefix, redis_url, "abort", "bad id!")
    assert result.returncode == 1 and "error" in result.stderr, result
