"""Jobs and worker processes for the pause tests: two queues, each run written to a ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio

from aiojobs_redis import Job
from support.faultapp import record
from support.worker_procs import TESTS

QUEUE_A, QUEUE_B = "pause-a", "pause-b"


class SleepA(Job):
    """Sleeps payload["sleep"] seconds (default 0) and records start and end."""

    name = "pauseapp.SleepA"
    queue = QUEUE_A

    async def handle(self) -> None:
        record(self.payload["ledger"], self, "start")
        await anyio.sleep(self.payload.get("sleep", 0))
        record(self.payload["ledger"], self, "end")


class SleepB(SleepA):
    name = "pauseapp.SleepB"
    queue = QUEUE_B


def start_worker(url: str, prefix: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`aiojobs-redis work --import support.pauseapp ARGS` on `url` and `prefix`, logging to `log`."""
    env = dict(os.environ, REDIS_URL=url, REDIS_JOB_PREFIX=prefix)
    env.pop("JOB_ENGINE", None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aiojobs_redis", "work", "--import", "support.pauseapp", *args],
            cwd=TESTS,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
