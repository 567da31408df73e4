"""Where the time goes: aiojobs-redis's per-job cost measured in one process, no peers.

    python benchmarks/costs.py                  # everything below, against $REDIS_URL or :6379
    python benchmarks/costs.py drain dispatch   # some of it

- drain: 20,000 queued jobs run by one in-process Worker (concurrency 100), with W2's handler
  (one redis-py INCR) and with an empty handler; jobs/s and the process's CPU time per job.
  The difference is what the benchmark's handler itself costs the worker.
- incr: that handler alone, a bare redis-py INCR from 100 tasks: the bound it puts on any
  library's W2 figure.
- dispatch: W1's three modes with the multiplexed connection (the default) and without it
  (every call through redis-py's pool), jobs/s and CPU per dispatched job.

Keys live under a random prefix and are deleted at the end. Run it on an otherwise idle
machine: the CPU figures are per process, the jobs/s figures are wall-clock.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
import uvloop

from aiojobs_redis import Job, RedisEngine, Settings, Worker, use_engine

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
N = int(os.environ.get("COSTS_JOBS", "20000"))  # a multiple of 1,000
PAYLOAD_PAD = "x" * 90  # a ~100-byte payload, as in W2 and W4
client = redis.asyncio.Redis.from_url(URL, max_connections=1000)  # W2's handler client
handled = 0  # jobs the handlers ran: a plain count keeps the check off the worker's internals


class IncrJob(Job):
    queue = "costs"
    name = "costs.IncrJob"

    async def handle(self) -> None:
        global handled
        handled += 1
        await client.incr(self.payload["counter"])


class EmptyJob(Job):
    queue = "costs"
    name = "costs.EmptyJob"

    async def handle(self) -> None:
        global handled
        handled += 1


async def timed(work: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    """(jobs/s, CPU microseconds per job) of `work`."""
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    return n / (time.perf_counter() - wall), 1e6 * (time.process_time() - cpu) / n


async def drain(prefix: str) -> None:
    global handled
    for cls in (IncrJob, EmptyJob):
        async with RedisEngine(Settings(url=URL, prefix=prefix)) as engine:
            payload = {"counter": f"{prefix}count", "pad": PAYLOAD_PAD}
            await engine.dispatch_many([cls(payload) for _ in range(N)])
            worker = Worker(engine, ["costs"], concurrency=100, burst=True, idle_wait=1)
            handled = 0
            rate, cpu = await timed(worker.run, N)
            assert handled == N, f"{handled} of {N} jobs ran"
            print(f"drain, {cls.__name__:<9} {rate:>8,.0f} jobs/s  {cpu:6.0f} us CPU/job")


async def incr(prefix: str) -> None:
    async def tasks() -> None:
        async def one(count: int) -> None:
            for _ in range(count):
                await client.incr(f"{prefix}count")

        await asyncio.gather(*(one(N // 100) for _ in range(100)))

    rate, cpu = await timed(tasks, N)
    print(f"bare INCR, 100 tasks {rate:>8,.0f} ops/s  {cpu:6.0f} us CPU/op")


async def dispatch(prefix: str) -> None:
    payload = {"i": 0}
    for multiplex in (True, False):
        async with RedisEngine(Settings(url=URL, prefix=prefix, multiplex=multiplex)) as engine:
            with use_engine(engine):
                await EmptyJob().dispatch(payload)  # connect, load the script

                async def seq() -> None:
                    for _ in range(N // 4):
                        await EmptyJob().dispatch(payload)

                async def concurrent() -> None:
                    async def chunk() -> None:
                        await asyncio.gather(*(EmptyJob().dispatch(payload) for _ in range(200)))

                    for _ in range(N // 200):
                        await chunk()

                async def bulk() -> None:
                    for _ in range(N // 1000):
                        await EmptyJob.dispatch_many([payload] * 1000)

                for mode, work, n in (("seq", seq, N // 4), ("concurrent", concurrent, N), ("bulk", bulk, N)):
                    rate, cpu = await timed(work, n)
                    via = "multiplexed" if multiplex else "redis-py pool"
                    print(f"dispatch {mode:<10} {via:<13} {rate:>8,.0f} jobs/s  {cpu:6.0f} us CPU/job")


async def main(parts: list[str]) -> None:
    prefix = f"costs-{uuid.uuid4().hex[:8]}:"
    steps = {"drain": drain, "incr": incr, "dispatch": dispatch}
    try:
        for part in parts or list(steps):
            await steps[part](prefix)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
        await client.aclose()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:]))
