"""Job classes for the command-line end-to-end tests.

The worker subprocess imports this module with ``--import jobapp`` (its current directory is
``tests/e2e``); the tests import it too, to dispatch. Every class sets ``name`` explicitly so
both sides agree on the stored name whatever the import path.

Handlers record each run in Redis under the key prefix the worker was given through
``REDIS_JOB_PREFIX`` (the tests always pass it), using ``REDIS_URL`` like the CLI does:

    <prefix>e2e:count          string  runs of every recording job, all together
    <prefix>e2e:runs           hash    job id -> runs of that job
"""

from __future__ import annotations

import os

from redis.asyncio import Redis

from aiojobs_redis import Job, PermanentFailure

DEFAULT_URL = "redis://127.0.0.1:6379"
OTHER_QUEUE = "e2e-other"
FAIL_MESSAGE = "always fails"
PERMANENT_MESSAGE = "gave up on purpose"


def count_key(prefix: str) -> str:
    return f"{prefix}e2e:count"


def runs_key(prefix: str) -> str:
    return f"{prefix}e2e:runs"


async def record_run(job_id: str | None) -> None:
    """Count one run of `job_id`, in total and per job."""
    prefix = os.environ["REDIS_JOB_PREFIX"]
    client = Redis.from_url(os.environ.get("REDIS_URL", DEFAULT_URL))
    async with client, client.pipeline(transaction=True) as pipe:
        pipe.incr(count_key(prefix))
        pipe.hincrby(runs_key(prefix), job_id or "?", 1)
        await pipe.execute()


class Count(Job):
    """Succeeds, once recorded."""

    name = "jobapp.Count"

    async def handle(self) -> None:
        await record_run(self.id)


class AlwaysFails(Job):
    """Raises on every attempt; three attempts."""

    name = "jobapp.AlwaysFails"
    attempts = 3

    async def handle(self) -> None:
        await record_run(self.id)
        raise ValueError(FAIL_MESSAGE)


class OtherQueueFails(Job):
    """Raises on its only attempt, in a queue of its own."""

    name = "jobapp.OtherQueueFails"
    queue = OTHER_QUEUE

    async def handle(self) -> None:
        await record_run(self.id)
        raise RuntimeError(FAIL_MESSAGE)


class GivesUp(Job):
    """Raises PermanentFailure although attempts remain."""

    name = "jobapp.GivesUp"
    attempts = 5

    async def handle(self) -> None:
        await record_run(self.id)
        raise PermanentFailure(PERMANENT_MESSAGE)
