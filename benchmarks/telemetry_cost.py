"""What metrics, events and middleware cost a worker on its hot path: drain N no-op jobs, with and without.

    .venv/bin/python benchmarks/telemetry_cost.py [--jobs 20000] [--rounds 3] [--modes off,mw]

Starts a private redis-server on a free loopback port (--save "" --appendonly no), and for
each round and mode dispatches N no-op jobs under a fresh prefix, then drains them with one
worker in its own process (concurrency 100, burst mode, uvloop as the CLI uses), which
reports its own jobs/s from start to exit (the final flush of events included). Modes:

    off      telemetry=False, tracing=False, no metrics (the baseline)
    metrics  Prometheus metrics (served on a free port) and the OpenTelemetry span per run
    events   the Redis event stream, throughput buckets and heartbeat
    all      everything above
    mw       as off, with one worker middleware that only awaits call_next()
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

MODES = ("off", "metrics", "events", "all", "mw")


def child(url: str, prefix: str, mode: str, jobs: int) -> None:
    import anyio
    from prometheus_client import CollectorRegistry

    from aiojobs_redis import RedisEngine, Settings, Worker
    from aiojobs_redis.metrics import PrometheusMetrics

    async def drain() -> dict[str, Any]:
        async with RedisEngine(Settings(url=url, prefix=prefix)) as engine:
            metrics = PrometheusMetrics(CollectorRegistry(), port=0) if mode in ("metrics", "all") else None
            worker = Worker(
                engine,
                ["bench"],
                concurrency=100,
                burst=True,
                metrics=metrics,
                telemetry=mode in ("events", "all"),
                tracing=mode in ("metrics", "all"),
                middleware=[_passing] if mode == "mw" else (),
            )
            redis_cpu = await _redis_cpu(engine)
            started, cpu = time.perf_counter(), time.process_time()
            await worker.run()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            redis_cpu = await _redis_cpu(engine) - redis_cpu
            if metrics is not None:
                metrics.close()
            assert worker.counters.succeeded == jobs, worker.counters
            return {
                "mode": mode,
                "seconds": elapsed,
                "jobs_per_s": jobs / elapsed,
                "worker_cpu_us": cpu / jobs * 1e6,
                "redis_cpu_us": redis_cpu / jobs * 1e6,
            }

    import tests.support.dashjobs  # noqa: F401 - registers the Noop job

    result = anyio.run(drain, backend_options={"use_uvloop": True})
    print(json.dumps(result))


async def _passing(ctx: Any, call_next: Any) -> Any:
    """The cheapest middleware there is."""
    return await call_next()


async def _redis_cpu(engine: Any) -> float:
    """Seconds of CPU the (private) server has used, user and system."""
    info = await engine.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def dispatch(url: str, prefix: str, jobs: int) -> None:
    import anyio

    from aiojobs_redis import RedisEngine, Settings
    from tests.support.dashjobs import Noop

    async def send() -> None:
        async with RedisEngine(Settings(url=url, prefix=prefix)) as engine:
            for start in range(0, jobs, 5_000):
                await engine.dispatch_many([Noop({"n": n}) for n in range(start, min(jobs, start + 5_000))])

    anyio.run(send)


def hot_path(n: int = 50_000) -> dict[str, float]:
    """Microseconds per job that each observer adds in the job's own task (no I/O, one process)."""
    import anyio
    from prometheus_client import CollectorRegistry

    from aiojobs_redis.events import RedisTelemetry
    from aiojobs_redis.hooks import JobContext
    from aiojobs_redis.metrics import JobTracer, PrometheusMetrics
    from aiojobs_redis.runner import Outcome

    def contexts() -> list[JobContext]:
        made = []
        for i in range(n):
            ctx = JobContext("w", "bench", f"job{i:012d}", "dashjobs.Noop", 1, 1, job=None)
            ctx.started_ms, ctx.duration, ctx.result = 1, 0.0001, "succeeded"
            made.append(ctx)
        return made

    costs: dict[str, float] = {}
    metrics = PrometheusMetrics(CollectorRegistry())
    batch = contexts()
    started = time.perf_counter()
    for ctx in batch:
        metrics.job_started(ctx)
        metrics.job_ended(ctx)
    costs["Prometheus metrics"] = (time.perf_counter() - started) / n * 1e6
    telemetry = RedisTelemetry(buffer_max=n)
    started = time.perf_counter()
    for ctx in batch:
        telemetry.job_started(ctx)
        telemetry.job_ended(ctx)
    costs["events: buffer + encode"] = (time.perf_counter() - started) / n * 1e6
    tracer = JobTracer.if_available()

    async def spans() -> float:
        async def handler() -> Outcome:
            return Outcome()

        assert tracer is not None
        started = time.perf_counter()
        for ctx in batch:
            await tracer.trace(ctx, handler)
        traced = time.perf_counter() - started
        started = time.perf_counter()
        for _ in batch:
            await handler()
        return (traced - (time.perf_counter() - started)) / n * 1e6

    if tracer is not None:
        costs["OpenTelemetry span (no SDK)"] = anyio.run(spans)
    costs.update(anyio.run(_middleware_runs, n))
    return costs


async def _middleware_runs(n: int) -> dict[str, float]:
    """A run through Lifecycle.run (nothing listening) with 1 and 3 middleware, against none."""
    from aiojobs_redis.lifecycle import Lifecycle
    from aiojobs_redis.records import ClaimedJob
    from aiojobs_redis.runner import run_handler
    from tests.support.dashjobs import Noop

    lifecycle = Lifecycle("w")
    claimed = ClaimedJob("bench", "job1", "tok1", b"dashjobs.Noop", b"{}", 0, 1, 1)
    job = Noop({})

    async def timed(chain: tuple[Any, ...]) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await lifecycle.run(claimed, job, run_handler, chain)
        return time.perf_counter() - started

    none = await timed(())
    one, three = await timed((_passing,)), await timed((_passing,) * 3)
    return {
        "middleware: 1 (+ its context)": (one - none) / n * 1e6,
        "middleware: each of 3": (three - none) / n / 3 * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, 'off' always included")
    parser.add_argument("--child", nargs=3, metavar=("URL", "PREFIX", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, prefix, mode = args.child
        child(url, prefix, mode, args.jobs)
        return

    import tempfile

    from tests.support.redis_server import RedisServer

    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))}: choose from {', '.join(MODES)}")
    modes = ["off", *(m for m in MODES if m in args.modes.split(",") and m != "off")]
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as scratch, RedisServer(Path(scratch), aof=False) as server:
        print(f"private redis-server on port {server.port}; {args.jobs} no-op jobs per run")
        for round_ in range(args.rounds):
            for mode in modes if round_ % 2 == 0 else reversed(modes):
                prefix = f"bench-{uuid.uuid4().hex[:8]}:"
                dispatch(server.url, prefix, args.jobs)
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

    def median(mode: str, field: str) -> float:
        return statistics.median(r[field] for r in results[mode])

    def paired(mode: str, field: str) -> float:
        """The median over rounds of this mode against "off" in the same round, as a change in %."""
        pairs = zip(results[mode], results["off"], strict=True)
        return 100 * (statistics.median(r[field] / off[field] for r, off in pairs) - 1)

    print("\nhot path, in-process, per job:")
    for name, micros in hot_path().items():
        print(f"  {name:<28} {micros:5.2f} us")
    print(
        "\nmedians, and in % the median change against 'off' in the same round (jobs/s is wall"
        "\ntime and moves with whatever else the machine runs; CPU time per job moves less)"
    )
    print(f"  {'mode':<8} {'jobs/s':>8} {'':>8} {'worker CPU/job':>15} {'':>8} {'Redis CPU/job':>14}")
    for mode in modes:
        rate, cpu, redis_cpu = (median(mode, f) for f in ("jobs_per_s", "worker_cpu_us", "redis_cpu_us"))
        print(
            f"  {mode:<8} {rate:>8,.0f} {paired(mode, 'jobs_per_s'):>+7.1f}% "
            f"{cpu:>12.1f} us {paired(mode, 'worker_cpu_us'):>+7.1f}% "
            f"{redis_cpu:>11.1f} us {paired(mode, 'redis_cpu_us'):>+7.1f}%"
        )


if __name__ == "__main__":
    main()
