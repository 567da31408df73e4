"""The benchmark's job class; the worker imports it with --import bench_jobs."""

import benchlib

from aiojobs_redis import Job


class BenchJob(Job):
    queue = benchlib.QUEUE

    async def handle(self) -> None:
        await benchlib.record(self.payload)
