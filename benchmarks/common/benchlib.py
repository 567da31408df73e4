"""What every library's bench.py shares: arguments, payloads, the handler's bookkeeping, results.

Only the standard library and redis-py, so it imports in every library's virtualenv.

The handler of every library does the same work: one INCR of a counter, timed here. The job
that takes the counter to 1 records its start time, the one that takes it to the expected
total records its end time; a job that carries its dispatch time ("t") pushes its start
delay in the same round trip as the INCR.

With BENCH_HANDLER=noop (W2-noop) the same handler makes no Redis call: it counts jobs in the
worker process, and the job that takes the count to the expected total writes the drain's
times and the process's CPU time to BENCH_DONE_FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

COUNTER = "bench:count"
FIRST_START = "bench:first"
LAST_END = "bench:last"
LATENCIES = "bench:lat"
QUEUE = "bench"
UNSUPPORTED = 3  # exit code of a role or mode the library does not offer
RESULT_TAG = "BENCH-RESULT "
CONCURRENT_CHUNK = 200
BULK_CHUNK = 1000

Payload = dict[str, Any]


NOOP = os.environ.get("BENCH_HANDLER") == "noop"
PROGRESS_EVERY = 1000  # W2-noop: jobs between two notes of the count


def redis_url() -> str:
    return os.environ["BENCH_REDIS_URL"]


def expected_jobs() -> int:
    return int(os.environ.get("BENCH_EXPECT", "0"))


def make_payload(i: int, size: int = 0) -> Payload:
    """{"i": i}, padded with a string to about `size` bytes of JSON when size > 0."""
    if size <= 0:
        return {"i": i}
    bare = len(json.dumps({"i": i, "pad": ""}, separators=(",", ":")))
    return {"i": i, "pad": "x" * max(0, size - bare)}


def use_uvloop() -> None:
    """Every asyncio process of every library runs on uvloop, as ours does by default."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def emit(result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


def unsupported(what: str) -> None:
    print(f"unsupported: {what}", file=sys.stderr, flush=True)
    raise SystemExit(UNSUPPORTED)


# -- the handler's bookkeeping ---------------------------------------------------------------

_async_client: Any = None
_sync_client: Any = None
_noop_count = 0
_noop_first = 0.0
_noop_cpu = 0.0


def count_noop() -> None:
    """W2-noop's handler body: an in-process count, no I/O until the last job.

    The CPU window runs from the first job's start to the last job's end, so imports and
    connecting are left out: what remains is the library's own work per job.
    """
    global _noop_count, _noop_first, _noop_cpu
    if _noop_count == 0:
        _noop_first, _noop_cpu = time.time(), time.process_time()
    _noop_count += 1
    if _noop_count % PROGRESS_EVERY == 0:  # lets the runner tell a slow drain from a stuck one
        with open(os.environ["BENCH_DONE_FILE"] + ".count", "w") as f:
            f.write(str(_noop_count))
    if _noop_count == expected_jobs():
        done = {
            "first": _noop_first,
            "last": time.time(),
            "cpu_s": time.process_time() - _noop_cpu,
            "jobs": _noop_count,
            "pid": os.getpid(),
        }
        path = os.environ["BENCH_DONE_FILE"]
        with open(path + ".tmp", "w") as f:
            json.dump(done, f)
        os.replace(path + ".tmp", path)  # the runner never reads a half-written file


async def record(payload: Any) -> None:
    """The body of every async library's handler: one INCR (plus the latency, if timed)."""
    global _async_client
    if NOOP:
        count_noop()
        return
    start = time.time()
    if _async_client is None:
        import redis.asyncio

        # An explicit pool size: redis-py 8 caps pools at 100 connections by default, 5-7 do not.
        _async_client = redis.asyncio.Redis.from_url(redis_url(), max_connections=1000)
    r = _async_client
    sent = payload.get("t") if isinstance(payload, dict) else None
    if sent is None:
        n = await r.incr(COUNTER)
    else:
        async with r.pipeline(transaction=False) as pipe:
            pipe.rpush(LATENCIES, start - sent)
            pipe.incr(COUNTER)
            _, n = await pipe.execute()
    if n == 1:
        await r.set(FIRST_START, repr(start))
    if n == expected_jobs():
        await r.set(LAST_END, repr(time.time()))


def record_sync(payload: Any) -> None:
    """The same for synchronous libraries (RQ)."""
    global _sync_client
    if NOOP:
        count_noop()
        return
    start = time.time()
    if _sync_client is None:
        import redis

        _sync_client = redis.Redis.from_url(redis_url())
    r = _sync_client
    sent = payload.get("t") if isinstance(payload, dict) else None
    if sent is None:
        n = r.incr(COUNTER)
    else:
        pipe = r.pipeline(transaction=False)
        pipe.rpush(LATENCIES, start - sent)
        pipe.incr(COUNTER)
        _, n = pipe.execute()
    if n == 1:
        r.set(FIRST_START, repr(start))
    if n == expected_jobs():
        r.set(LAST_END, repr(time.time()))


# -- the dispatch side -----------------------------------------------------------------------

One = Callable[[Payload], Awaitable[Any]]
Many = Callable[[Sequence[Payload]], Awaitable[Any]]


async def drive_dispatch(mode: str, payloads: list[Payload], one: One, many: Many | None) -> float:
    """Dispatch `payloads` in `mode`; return the seconds it took."""
    start = time.perf_counter()
    if mode == "seq":
        for p in payloads:
            await one(p)
    elif mode == "concurrent":
        for i in range(0, len(payloads), CONCURRENT_CHUNK):
            await asyncio.gather(*(one(p) for p in payloads[i : i + CONCURRENT_CHUNK]))
    else:
        assert many is not None
        for i in range(0, len(payloads), BULK_CHUNK):
            await many(payloads[i : i + BULK_CHUNK])
    return time.perf_counter() - start


async def drive_latency(n: int, rate: float, one: One) -> float:
    """Dispatch n jobs paced at `rate` per second, each stamped with time.time() just before."""
    start = time.perf_counter()
    for i in range(n):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        await one({"i": i, "t": time.time()})
    return time.perf_counter() - start


def drive_dispatch_sync(
    mode: str,
    payloads: list[Payload],
    one: Callable[[Payload], Any],
    many: Callable[[Sequence[Payload]], Any],
) -> float:
    start = time.perf_counter()
    if mode == "seq":
        for p in payloads:
            one(p)
    elif mode == "bulk":
        for i in range(0, len(payloads), BULK_CHUNK):
            many(payloads[i : i + BULK_CHUNK])
    else:
        unsupported(f"dispatch mode {mode} (no asyncio API)")
    return time.perf_counter() - start


def drive_latency_sync(n: int, rate: float, one: Callable[[Payload], Any]) -> float:
    start = time.perf_counter()
    for i in range(n):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        one({"i": i, "t": time.time()})
    return time.perf_counter() - start


# -- the command line every bench.py shares --------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one library's side of the benchmarks")
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("info", help="print the library's version and settings as JSON")
    dispatch = roles.add_parser("dispatch", help="dispatch N jobs and time it")
    dispatch.add_argument("--mode", choices=["seq", "concurrent", "bulk"], default="seq")
    dispatch.add_argument("--n", type=int, default=20_000)
    dispatch.add_argument("--payload-bytes", type=int, default=0, help="pad payloads to ~this JSON size")
    worker = roles.add_parser("worker", help="run the library's worker until SIGTERM")
    worker.add_argument("--concurrency", type=int, default=100)
    latency = roles.add_parser("latency-dispatch", help="paced dispatch of jobs carrying their send time")
    latency.add_argument("--n", type=int, default=2_000)
    latency.add_argument("--rate", type=float, default=500.0)
    return parser.parse_args(argv)


def dispatch_result(args: argparse.Namespace, seconds: float) -> None:
    emit({"role": "dispatch", "mode": args.mode, "n": args.n, "seconds": seconds})


def latency_result(args: argparse.Namespace, seconds: float) -> None:
    emit({"role": "latency-dispatch", "n": args.n, "seconds": seconds, "rate": args.n / seconds})


async def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (for workers that run inside our own event loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
