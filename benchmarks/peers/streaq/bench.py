"""streaq: dispatch with `await bench_job.enqueue(payload)`; worker via `Worker.run_sync()`.

Polling: none; idle workers block in XREADGROUP (BLOCK = idle_timeout, 60 s).
Concurrency knob: `concurrency` (default 16), set to 100 (prefetch defaults to 2 x that).
"""

from __future__ import annotations

import os
from importlib.metadata import version

import benchlib
from streaq import Worker

worker = Worker(
    redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
    queue_name=benchlib.QUEUE,
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
    anyio_kwargs={"use_uvloop": True},
)


@worker.task(name="bench_job")
async def bench_job(payload: dict) -> None:
    await benchlib.record(payload)


def info() -> None:
    benchlib.emit(
        {
            "library": "streaq",
            "version": version("streaq"),
            "redis_py": version("coredis")
            + " (coredis; the handler's INCR uses redis-py "
            + version("redis")
            + ")",
            "concurrency_knob": "Worker(concurrency=100)",
            "polling": "no polling: idle workers block in XREADGROUP (idle_timeout=60 s)",
            "bulk_api": "Worker.enqueue_many",
            "notes": "pickle; results kept 5 min (ttl default)",
        }
    )


async def dispatch(args) -> None:
    async with worker:

        async def one(payload):
            return await bench_job.enqueue(payload)

        async def many(payloads):
            await worker.enqueue_many([bench_job.enqueue(p) for p in payloads])

        if args.role == "latency-dispatch":
            benchlib.latency_result(args, await benchlib.drive_latency(args.n, args.rate, one))
            return
        payloads = [benchlib.make_payload(i, args.payload_bytes) for i in range(args.n)]
        benchlib.dispatch_result(args, await benchlib.drive_dispatch(args.mode, payloads, one, many))


def main() -> None:
    import asyncio

    args = benchlib.parse_args()
    if args.role == "info":
        info()
    elif args.role == "worker":
        # The concurrency (and the prefetch derived from it) is fixed when the module-level
        # Worker is built, from BENCH_CONCURRENCY.
        assert worker.concurrency == args.concurrency, "set BENCH_CONCURRENCY"
        worker.run_sync()
    else:
        benchlib.use_uvloop()
        asyncio.run(dispatch(args))


if __name__ == "__main__":
    main()
