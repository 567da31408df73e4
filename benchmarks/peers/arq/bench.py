"""arq: dispatch with `await redis.enqueue_job("bench_job", payload)`; worker via arq's Worker.

Polling: the worker polls the queue every `poll_delay` (default 0.5 s).
Concurrency knob: `max_jobs` (default 10), set to 100.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import benchlib


async def bench_job(ctx, payload):
    await benchlib.record(payload)


def info() -> None:
    benchlib.emit(
        {
            "library": "arq",
            "version": version("arq"),
            "redis_py": version("redis"),
            "concurrency_knob": "max_jobs=100",
            "polling": "poll_delay=0.5 s (default): the worker polls the queue",
            "bulk_api": None,
            "notes": "pickle; results kept 1 h (keep_result default); no bulk enqueue API",
        }
    )


async def dispatch(args) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    if args.role == "dispatch" and args.mode == "bulk":
        benchlib.unsupported("bulk dispatch (no bulk API)")
    redis = await create_pool(RedisSettings.from_dsn(benchlib.redis_url()))
    try:

        async def one(payload):
            return await redis.enqueue_job("bench_job", payload)

        if args.role == "latency-dispatch":
            benchlib.latency_result(args, await benchlib.drive_latency(args.n, args.rate, one))
            return
        payloads = [benchlib.make_payload(i, args.payload_bytes) for i in range(args.n)]
        benchlib.dispatch_result(args, await benchlib.drive_dispatch(args.mode, payloads, one, None))
    finally:
        await redis.aclose()


def worker(args) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    benchlib.use_uvloop()
    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(
        functions=[bench_job],
        redis_settings=RedisSettings.from_dsn(benchlib.redis_url()),
        max_jobs=args.concurrency,
        handle_signals=True,
    ).run()


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
