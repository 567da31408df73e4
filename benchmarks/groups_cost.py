"""What rate groups cost a drain: N no-op jobs in one queue, plain or spread over rate groups.

    .venv/bin/python benchmarks/groups_cost.py [--jobs 20000] [--rounds 3] [--groups 100]

Starts a private redis-server on a free loopback port (--save "" --appendonly no), and for
each round and mode dispatches N no-op jobs under a fresh prefix, then drains them with one
worker in its own process (concurrency 100, burst mode, uvloop as the CLI uses), which
reports its own jobs/s from start to exit. Modes, in the same run (alternating order):

    plain    the jobs in the queue list (no group)
    grouped  the same jobs in --groups rate groups (round-robin claim, running count per
             group), no group limit set: the cost of the ring itself

The design target: grouped drain >= 0.8x plain drain (jobs/s), median of the rounds'
ratios (each against plain in the same round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # the repository: tests.support's private server

MODES = ("plain", "grouped")
QUEUE = "bench"


def job_classes() -> dict[str, Any]:
    from aiojobs_redis import Job

    class GroupsBenchPlain(Job):
        name = "groups_cost.Plain"
        queue = QUEUE

        async def handle(self) -> None:
            return None

    class GroupsBenchGrouped(Job):
        name = "groups_cost.Grouped"
        queue = QUEUE
        group = "g{g}"

        async def handle(self) -> None:
            return None

    return {"plain": GroupsBenchPlain, "grouped": GroupsBenchGrouped}


def child(url: str, prefix: str, mode: str, jobs: int) -> None:
    import anyio

    from aiojobs_redis import RedisEngine, Settings, Worker

    job_classes()

    async def drain() -> dict[str, Any]:
        async with RedisEngine(Settings(url=url, prefix=prefix)) as engine:
            worker = Worker(engine, [QUEUE], concurrency=100, burst=True, telemetry=False)
            info = await engine.redis.info("cpu")
            redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            started, cpu = time.perf_counter(), time.process_time()
            await worker.run()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            info = await engine.redis.info("cpu")
            redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) - redis_cpu
            assert worker.counters.succeeded == jobs, worker.counters
            return {
                "mode": mode,
                "jobs_per_s": jobs / elapsed,
                "worker_cpu_us": cpu / jobs * 1e6,
                "redis_cpu_us": redis_cpu / jobs * 1e6,
            }

    print(json.dumps(anyio.run(drain, backend_options={"use_uvloop": True})))


def dispatch(url: str, prefix: str, mode: str, jobs: int, groups: int) -> None:
    import anyio

    from aiojobs_redis import RedisEngine, Settings

    cls = job_classes()[mode]

    async def send() -> None:
        async with RedisEngine(Settings(url=url, prefix=prefix)) as engine:
            for start in range(0, jobs, 5_000):
                batch = range(start, min(jobs, start + 5_000))
                await engine.dispatch_many([cls({"n": n, "g": n % groups}) for n in batch])

    anyio.run(send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--child", nargs=3, metavar=("URL", "PREFIX", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, prefix, mode = args.child
        child(url, prefix, mode, args.jobs)
        return

    import tempfile

    from tests.support.redis_server import RedisServer

    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as scratch, RedisServer(Path(scratch), aof=False) as server:
        print(
            f"private redis-server on port {server.port}; {args.jobs} no-op jobs per run, "
            f"{args.groups} groups"
        )
        for round_ in range(args.rounds):
            for mode in MODES if round_ % 2 == 0 else reversed(MODES):
                prefix = f"bench-{uuid.uuid4().hex[:8]}:"
                dispatch(server.url, prefix, mode, args.jobs, args.groups)
                out = subprocess.run(
                    [sys.executable, __file__, "--jobs", str(args.jobs), "--child", server.url, prefix, mode],
                    env=dict(os.environ, PYTHONPATH=sys.path[0]),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(result)
                print(
                    f"round {round_ + 1} {mode:<8} {result['jobs_per_s']:>7,.0f} jobs/s  worker CPU "
                    f"{result['worker_cpu_us']:5.1f} us/job  Redis CPU {result['redis_cpu_us']:5.1f} us/job"
                )
    ratios = [
        g["jobs_per_s"] / p["jobs_per_s"] for g, p in zip(results["grouped"], results["plain"], strict=True)
    ]
    for field in ("jobs_per_s", "worker_cpu_us", "redis_cpu_us"):
        plain = statistics.median(r[field] for r in results["plain"])
        grouped = statistics.median(r[field] for r in results["grouped"])
        print(f"median {field:<14} plain {plain:>9,.1f}  grouped {grouped:>9,.1f}")
    ratio = statistics.median(ratios)
    print(f"grouped / plain drain (median of same-round ratios): {ratio:.2f}x (target >= 0.80x)")


if __name__ == "__main__":
    main()
