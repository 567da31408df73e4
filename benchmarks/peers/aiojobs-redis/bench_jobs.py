"""The benchmark's job class; the worker imports it with --import bench_jobs.

`BENCH_PRIORITY` (run.py --priority N) dispatches every job at that priority level.
"""

import os

import benchlib

from aiojobs_redis import Job


class BenchJob(Job):
    queue = benchlib.QUEUE
    priority = int(os.environ.get("BENCH_PRIORITY", "0"))

    async def handle(self) -> None:
        await benchlib.record(self.payload)
