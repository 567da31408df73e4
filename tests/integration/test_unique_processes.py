"""Unique jobs across processes and tasks: dispatched from four processes at once, and run
by a Worker while more dispatches of their keys arrive."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import ClassVar

import pytest
from redis.asyncio import Redis
from support import uniqueapp
from support.keyspace import delete_prefix
from support.worker_procs import TESTS

from aiojobs_redis import Job, RedisEngine, Worker
from aiojobs_redis.keys import QueueKeys

pytestmark = pytest.mark.anyio


async def test_concurrent_dispatches_from_four_processes_store_one_job(
    redis_url: str, prefix: str, raw_redis: Redis
) -> None:
    start = time.time() + 3  # all four are connected by then, even on a busy machine
    command = [sys.executable, "-m", "support.uniqueapp", redis_url, prefix, str(start), "50"]
    procs = [
        subprocess.Popen(command, cwd=TESTS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    ids = [line for out, _ in outputs for line in out.split()]
    keys = QueueKeys.of(prefix, uniqueapp.QUEUE)
    stored = [k async for k in raw_redis.scan_iter(match=f"{keys.job_prefix}*", count=1000)]
    queued = await raw_redis.lrange(keys.ready, 0, -1)
    print(f"\n4 processes x 50 dispatches: {len(ids)} ids, {len(set(ids))} distinct, {len(stored)} stored")
    assert len(ids) == 200
    assert len(set(ids)) == 1
    assert stored == [keys.job(ids[0]).encode()]
    assert queued == [ids[0].encode()]
    await delete_prefix(redis_url, prefix)


class Flaky(Job):
    name = "unique.Flaky"
    queue = "unique-worker"
    unique = True
    unique_key = "k"
    attempts = 2
    runs: ClassVar[list[tuple[int, int]]] = []

    async def handle(self) -> None:
        self.runs.append((self.payload["k"], self.attempt))
        # While it runs, the key is held: a dispatch returns this job's id.
        assert await Flaky.dispatch({"k": self.payload["k"]}) == self.id
        if self.attempt == 1 and self.payload["k"] % 2:
            raise RuntimeError("odd keys fail their first try")


async def test_a_worker_runs_unique_jobs_to_their_end_and_leaves_no_lock(engine: RedisEngine) -> None:
    ids = await Flaky.dispatch_many([{"k": k % 10} for k in range(30)])
    assert len(set(ids)) == 10
    worker = Worker(engine, [Flaky.queue], burst=True, concurrency=5)
    await worker.run()
    assert sorted(Flaky.runs) == sorted([(k, 1) for k in range(10)] + [(k, 2) for k in range(1, 10, 2)])
    base = engine.keys(Flaky.queue).base
    assert [k async for k in engine.redis.scan_iter(match=f"{base}:u*")] == []
    assert await Flaky.dispatch({"k": 0}) not in ids
