"""What workflows cost: memory per job and drain rate, plain jobs against the same jobs in a
batch, in chains and with depends_on.

    .venv/bin/python benchmarks/flows_cost.py [--jobs 10000] [--rounds 3] [--chain 10]

Starts a private redis-server on a free loopback port (--save "" --appendonly no). For each
round and mode, under a fresh prefix: dispatches --jobs no-op jobs (100-byte payloads),
reads Redis's used_memory before and after (bytes per job waiting), then drains them with
one in-process Worker (concurrency 100, burst mode, uvloop) and reports jobs/s. Modes, in
the same run (alternating order):

    plain    dispatch_many: inline records in the queue list
    batch    one batch of all the jobs, with an on_complete callback (not counted)
    chains   chains of --chain steps: every step but the first waits for the one before
    after    pairs: a plain job, and a job with depends_on=[it]

Ratios are each mode's rate over plain's in the same round; the median over rounds is shown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # the repository: tests.support's private server

MODES = ("plain", "batch", "chains", "after")
QUEUE = "bench"
PAYLOAD = "x" * 88  # with {"p": ...}: about 100 bytes of JSON


def job_class() -> Any:
    from aiojobs_redis import Job

    class FlowBenchJob(Job):
        name = "flows_cost.Noop"
        queue = QUEUE

        async def handle(self) -> None:
            return None

    return FlowBenchJob


async def dispatch(mode: str, jobs: int, chain_len: int) -> None:
    from aiojobs_redis import batch, chain, current_engine

    cls = job_class()
    engine = current_engine()
    if mode == "plain":
        for start in range(0, jobs, 5_000):
            await engine.dispatch_many([cls({"p": PAYLOAD}) for _ in range(start, min(jobs, start + 5_000))])
    elif mode == "batch":
        await batch([cls({"p": PAYLOAD}) for _ in range(jobs)], on_complete=cls({"p": "done"})).dispatch()
    elif mode == "chains":
        for _ in range(jobs // chain_len):
            await chain(*[cls({"p": PAYLOAD}) for _ in range(chain_len)]).dispatch()
    else:
        for _ in range(jobs // 2):
            first = await cls({"p": PAYLOAD}).dispatch()
            await cls({"p": PAYLOAD}).dispatch(depends_on=[first])


async def one(url: str, mode: str, jobs: int, chain_len: int) -> dict[str, float]:
    from aiojobs_redis import RedisEngine, Settings, Worker, use_engine

    async with RedisEngine(Settings(url=url, prefix=f"fb-{uuid.uuid4().hex[:8]}:")) as engine:
        with use_engine(engine):
            await engine.register_queues([QUEUE])
            before = int((await engine.redis.info("memory"))["used_memory"])
            started = time.perf_counter()
            await dispatch(mode, jobs, chain_len)
            dispatch_s = time.perf_counter() - started
            after = int((await engine.redis.info("memory"))["used_memory"])
            worker = Worker(engine, [QUEUE], concurrency=100, burst=True, telemetry=False)
            started = time.perf_counter()
            await worker.run()
            drain_s = time.perf_counter() - started
            ran = worker.counters.succeeded
    return {
        "bytes_per_job": (after - before) / jobs,
        "dispatch_per_s": jobs / dispatch_s,
        "drain_per_s": ran / drain_s,
        "ran": ran,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain", type=int, default=10)
    args = parser.parse_args()

    import anyio

    from tests.support.redis_server import RedisServer

    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as scratch, RedisServer(Path(scratch), aof=False) as server:
        for round_ in range(args.rounds):
            order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                result = anyio.run(
                    one, server.url, mode, args.jobs, args.chain, backend_options={"use_uvloop": True}
                )
                results[mode].append(result)
                print(
                    f"round {round_ + 1} {mode:6} {result['bytes_per_job']:7.0f} B/job  "
                    f"dispatch {result['dispatch_per_s']:8.0f}/s  drain {result['drain_per_s']:7.0f}/s  "
                    f"ran {result['ran']:.0f}",
                    flush=True,
                )
    print(f"\n{args.jobs} jobs per mode, median of {args.rounds} rounds (ratio: against plain, same round)")
    print(f"{'mode':8} {'B/job':>7} {'dispatch/s':>11} {'drain/s':>9} {'drain ratio':>12}")
    for mode in MODES:
        pairs = zip(results[mode], results["plain"], strict=True)
        ratios = [r["drain_per_s"] / p["drain_per_s"] for r, p in pairs]
        print(
            f"{mode:8} {statistics.median(r['bytes_per_job'] for r in results[mode]):7.0f} "
            f"{statistics.median(r['dispatch_per_s'] for r in results[mode]):11.0f} "
            f"{statistics.median(r['drain_per_s'] for r in results[mode]):9.0f} "
            f"{statistics.median(ratios):11.2f}x"
        )


if __name__ == "__main__":
    main()
