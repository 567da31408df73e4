"""taskiq + taskiq-redis: dispatch with `await bench_job.kiq(payload)` on a RedisStreamBroker;
worker via the `taskiq worker` command (one worker process, --max-async-tasks 100).

Polling: none; idle workers block in XREADGROUP (xread_block=2000 ms).
Concurrency knob: --max-async-tasks (default 100).
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version

import benchlib
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(
    url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"), queue_name=benchlib.QUEUE
)


@broker.task(task_name="bench_job")
async def bench_job(payload: dict) -> None:
    await benchlib.record(payload)


def info() -> None:
    benchlib.emit(
        {
            "library": "taskiq",
            "version": f"taskiq {version('taskiq')}, taskiq-redis {version('taskiq-redis')}",
            "redis_py": version("redis"),
            "concurrency_knob": "taskiq worker --max-async-tasks 100 --workers 1",
            "polling": "no polling: idle workers block in XREADGROUP (xread_block=2000 ms)",
            "bulk_api": None,
            "notes": "RedisStreamBroker (acknowledged); no result backend; the CLI runs a "
            "supervisor process plus one worker process",
        }
    )


async def dispatch(args) -> None:
    if args.role == "dispatch" and args.mode == "bulk":
        benchlib.unsupported("bulk dispatch (no bulk API)")
    await broker.startup()  # also creates the consumer group, so queued jobs are read
    try:

        async def one(payload):
            return await bench_job.kiq(payload)

        if args.role == "latency-dispatch":
            benchlib.latency_result(args, await benchlib.drive_latency(args.n, args.rate, one))
            return
        payloads = [benchlib.make_payload(i, args.payload_bytes) for i in range(args.n)]
        benchlib.dispatch_result(args, await benchlib.drive_dispatch(args.mode, payloads, one, None))
    finally:
        await broker.shutdown()


def worker(args) -> None:
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    argv = [
        sys.executable, "-m", "taskiq", "worker", "bench:broker",
        "--workers", "1", "--max-async-tasks", str(args.concurrency), "--log-level", "WARNING",
    ]  # fmt: skip
    os.execv(sys.executable, argv)


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
