"""aiojobs-redis: dispatch with `await BenchJob().dispatch(payload)`; the worker is the CLI's
(`aiojobs-redis work`).

Polling: none; an idle worker blocks on the queue's wake list (BLPOP, `idle_wait` 5 s).
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version

import benchlib

PREFIX = "aj:"


def info() -> None:
    from bench_jobs import BenchJob

    import aiojobs_redis

    benchlib.emit(
        {
            "library": "aiojobs-redis",
            "version": version("aiojobs-redis"),
            "redis_py": version("redis"),
            "concurrency_knob": "--concurrency 100",
            "polling": "no polling: idle workers block on a wake list (BLPOP, re-armed every 5 s)",
            "bulk_api": "Job.dispatch_many" if hasattr(BenchJob, "dispatch_many") else None,
            "priority": getattr(BenchJob, "priority", 0),
            "notes": (
                "finished jobs deleted at once (keep_done_ms=0, the default); per-job script "
                "calls over one multiplexed connection (multiplex=True, the default)"
            ),
            "source": os.path.dirname(aiojobs_redis.__file__),
        }
    )


async def dispatch(args) -> None:
    from bench_jobs import BenchJob

    import aiojobs_redis

    many = getattr(BenchJob, "dispatch_many", None)
    if args.role == "dispatch" and args.mode == "bulk" and many is None:
        benchlib.unsupported("bulk dispatch (no bulk API)")
    async with aiojobs_redis.connect(benchlib.redis_url(), prefix=PREFIX):

        async def one(payload):
            return await BenchJob().dispatch(payload)

        if args.role == "latency-dispatch":
            benchlib.latency_result(args, await benchlib.drive_latency(args.n, args.rate, one))
            return
        payloads = [benchlib.make_payload(i, args.payload_bytes) for i in range(args.n)]
        seconds = await benchlib.drive_dispatch(args.mode, payloads, one, many)
        benchlib.dispatch_result(args, seconds)


def worker(args) -> None:
    """The CLI's `work` command, run in this process (no exec, so a profiler can follow it)."""
    from aiojobs_redis.cli import main as cli

    os.chdir(os.path.dirname(os.path.abspath(__file__)))  # --import resolves from the cwd
    argv = [
        "work", "--url", benchlib.redis_url(), "--prefix", PREFIX,
        "--import", "bench_jobs", "--queue", benchlib.QUEUE,
        "--concurrency", str(args.concurrency), "--log-level", "WARNING",
    ]  # fmt: skip
    sys.exit(cli(argv))


def main() -> None:
    args = benchlib.parse_args()
    if args.role == "info":
        info()
    elif args.role == "worker":
        worker(args)
    else:
        benchlib.use_uvloop()
        asyncio.run(dispatch(args))


if __name__ == "__main__":
    main()
