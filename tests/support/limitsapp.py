"""Jobs and queue limits for the limit tests with worker processes (`--import support.limitsapp`).

Each run writes its start to the per-process ledger (support/ledger.py) as the time its claim
gave it, from Redis TIME (the job hash's field b, set by claim.lua: the moment the limiter
let it start), and its end as Redis TIME when handle() returns.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from aiojobs_redis import Job, QueueLimits, RedisEngine, current_engine
from support.faultapp import previous_starts

RATE_QUEUE = "limits-rate"
RUNNING_QUEUE = "limits-running"
REPLAY_QUEUE = "limits-replay"
RATE, BURST = 50, 5
REPLAY_RATE, REPLAY_BURST = 20, 5
MAX_RUNNING = 3

QueueLimits(RATE_QUEUE, rate=f"{RATE}/second", burst=BURST)
QueueLimits(RUNNING_QUEUE, max_running=MAX_RUNNING)
QueueLimits(REPLAY_QUEUE, rate=f"{REPLAY_RATE}/s", burst=REPLAY_BURST)


def _write(ledger_dir: str, job: Job, event: str, at_s: float) -> None:
    with open(Path(ledger_dir) / f"{os.getpid()}.log", "a") as f:
        f.write(f"{job.id} {job.attempt} {os.getpid()} {event} {at_s:.6f}\n")


async def _redis_now_s(engine: RedisEngine) -> float:
    seconds, micros = await engine.redis.time()
    return seconds + micros / 1e6


async def record_start(job: Job) -> None:
    engine = current_engine()
    assert isinstance(engine, RedisEngine)
    claimed_ms = await engine.redis.hget(engine.keys(job.queue).job(str(job.id)), "b")
    assert claimed_ms is not None, "a running job's hash has its claim time"
    _write(job.payload["ledger"], job, "start", int(claimed_ms) / 1000)


async def record_end(job: Job) -> None:
    engine = current_engine()
    assert isinstance(engine, RedisEngine)
    _write(job.payload["ledger"], job, "end", await _redis_now_s(engine))


class RateLimitedRecord(Job):
    """Records its start (claim time) and end; sleeps payload["sleep"] seconds between."""

    name = "limitsapp.RateLimitedRecord"
    queue = RATE_QUEUE

    async def handle(self) -> None:
        await record_start(self)
        await anyio.sleep(self.payload.get("sleep", 0))
        await record_end(self)


class ReplayLimitedRecord(RateLimitedRecord):
    name = "limitsapp.ReplayLimitedRecord"
    queue = REPLAY_QUEUE


class RunningLimitedRecord(Job):
    """As RateLimitedRecord in the max_running queue; with payload["hang"], its first run
    hangs (so that its worker can be killed holding it)."""

    name = "limitsapp.RunningLimitedRecord"
    queue = RUNNING_QUEUE

    async def handle(self) -> None:
        first = previous_starts(self.payload["ledger"], str(self.id)) == 0
        await record_start(self)
        if first and self.payload.get("hang"):
            await anyio.sleep(3600)
        await anyio.sleep(self.payload.get("sleep", 0))
        await record_end(self)
