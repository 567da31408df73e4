"""RQ: dispatch with `queue.enqueue("rq_jobs.bench_job", payload)` (synchronous; RQ has no
asyncio API); worker = SimpleWorker (runs jobs in the worker process, one at a time).

Polling: none; idle workers block in BLMOVE (dequeue timeout: worker TTL minus 15 s).
Concurrency knob: none inside a process (one job at a time); scaling is by processes.
"""

from __future__ import annotations

from importlib.metadata import version

import benchlib

JOB = "rq_jobs.bench_job"


def info() -> None:
    benchlib.emit(
        {
            "library": "rq",
            "version": version("rq"),
            "redis_py": version("redis"),
            "concurrency_knob": "none: one job at a time per worker process (SimpleWorker)",
            "polling": "no polling: idle workers block in BLMOVE",
            "bulk_api": "Queue.enqueue_many",
            "notes": "synchronous: no concurrent dispatch; SimpleWorker instead of the default "
            "fork-per-job Worker; pickle; results kept 500 s (result_ttl default)",
        }
    )


def make_queue():
    from redis import Redis
    from rq import Queue

    return Queue(benchlib.QUEUE, connection=Redis.from_url(benchlib.redis_url()))


def dispatch(args) -> None:
    from rq import Queue

    queue = make_queue()

    def one(payload):
        return queue.enqueue(JOB, payload)

    def many(payloads):
        return queue.enqueue_many([Queue.prepare_data(JOB, args=(p,)) for p in payloads])

    if args.role == "latency-dispatch":
        benchlib.latency_result(args, benchlib.drive_latency_sync(args.n, args.rate, one))
        return
    if args.mode == "concurrent":
        benchlib.unsupported("concurrent dispatch (no asyncio API)")
    payloads = [benchlib.make_payload(i, args.payload_bytes) for i in range(args.n)]
    benchlib.dispatch_result(args, benchlib.drive_dispatch_sync(args.mode, payloads, one, many))


def worker(args) -> None:
    from rq import SimpleWorker

    queue = make_queue()
    SimpleWorker([queue], connection=queue.connection).work(logging_level="WARNING")


def main() -> None:
    args = benchlib.parse_args()
    if args.role == "info":
        info()
    elif args.role == "worker":
        worker(args)
    else:
        dispatch(args)


if __name__ == "__main__":
    main()
