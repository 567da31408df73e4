"""SAQ: dispatch with `await queue.enqueue("bench_job", **payload)`; worker via saq's Worker.

Polling: none on Redis; idle workers block in BLMOVE (dequeue_timeout 0 = forever).
Concurrency knob: `concurrency` (default 10), set to 100.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import benchlib


async def bench_job(ctx, **payload):
    await benchlib.record(payload)


def info() -> None:
    benchlib.emit(
        {
            "library": "saq",
            "version": version("saq"),
            "redis_py": version("redis"),
            "concurrency_knob": "concurrency=100",
            "polling": "no polling: idle workers block in BLMOVE (dequeue_timeout=0)",
            "bulk_api": None,
            "notes": "JSON; finished jobs kept 600 s (ttl default); "
            "no bulk enqueue API (map() waits for results)",
        }
    )


def make_queue():
    from saq import Queue

    return Queue.from_url(benchlib.redis_url(), name=benchlib.QUEUE)


async def dispatch(args) -> None:
    if args.role == "dispatch" and args.mode == "bulk":
        benchlib.unsupported("bulk dispatch (no bulk API)")
    queue = make_queue()
    await queue.connect()
    try:

        async def one(payload):
            return await queue.enqueue("bench_job", **payload)

        if args.role == "latency-dispatch":
            benchlib.latency_result(args, await benchlib.drive_latency(args.n, args.rate, one))
            return
        payloads = [benchlib.make_payload(i, args.payload_bytes) for i in range(args.n)]
        benchlib.dispatch_result(args, await benchlib.drive_dispatch(args.mode, payloads, one, None))
    finally:
        await queue.disconnect()


async def run_worker(concurrency: int) -> None:
    from saq import Worker

    queue = make_queue()
    await queue.connect()
    try:
        await Worker(queue, functions=[("bench_job", bench_job)], concurrency=concurrency).start()
    finally:
        await queue.disconnect()


def main() -> None:
    args = benchlib.parse_args()
    if args.role == "info":
        info()
        return
    benchlib.use_uvloop()
    if args.role == "worker":
        asyncio.run(run_worker(args.concurrency))
    else:
        asyncio.run(dispatch(args))


if __name__ == "__main__":
    main()
