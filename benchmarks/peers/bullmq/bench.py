"""BullMQ (Python): dispatch with `await queue.add("bench_job", payload)`; worker = bullmq's
Worker with concurrency 100.

Polling: none; idle workers block in BZPOPMIN on the queue's marker key (drainDelay 5 s).
Concurrency knob: `concurrency` (default 1), set to 100.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import benchlib


def info() -> None:
    benchlib.emit(
        {
            "library": "bullmq",
            "version": version("bullmq"),
            "redis_py": version("redis"),
            "concurrency_knob": 'Worker(opts={"concurrency": 100})',
            "polling": "no polling: idle workers block in BZPOPMIN on a marker (drainDelay=5 s)",
            "bulk_api": "Queue.addBulk",
            "notes": "JSON; completed jobs kept (removeOnComplete default false); an event "
            "stream capped at ~10,000 entries; one connection per Queue",
        }
    )


async def dispatch(args) -> None:
    from bullmq import Queue

    queue = Queue(benchlib.QUEUE, {"connection": benchlib.redis_url()})
    try:

        async def one(payload):
            return await queue.add("bench_job", payload)

        async def many(payloads):
            return await queue.addBulk([{"name": "bench_job", "data": p} for p in payloads])

        if args.role == "latency-dispatch":
            benchlib.latency_result(args, await benchlib.drive_latency(args.n, args.rate, one))
            return
        payloads = [benchlib.make_payload(i, args.payload_bytes) for i in range(args.n)]
        benchlib.dispatch_result(args, await benchlib.drive_dispatch(args.mode, payloads, one, many))
    finally:
        await queue.close()


async def process(job, token):
    await benchlib.record(job.data)


async def run_worker(concurrency: int) -> None:
    from bullmq import Worker

    worker = Worker(benchlib.QUEUE, process, {"connection": benchlib.redis_url(), "concurrency": concurrency})
    await benchlib.wait_for_signal()
    await worker.close()


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
