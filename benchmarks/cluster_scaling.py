"""Drain throughput on a Redis Cluster: queues spread over 1, 2 and 3 primaries, and one hot
queue unsharded vs sharded.

    .venv/bin/python benchmarks/cluster_scaling.py              # 30,000 jobs per scenario
    .venv/bin/python benchmarks/cluster_scaling.py --quick      # 6,000 jobs, a smoke run
    .venv/bin/python benchmarks/cluster_scaling.py --replicas 1 --workers 4 --json out.json

Starts its own Cluster (3 primaries, `--replicas` replicas each, loopback, free ports, AOF
on with fsync every second), with the helpers of tests/cluster. For each scenario: the jobs are
queued first (dispatch_many, timed as the dispatch figure), then `--workers` worker
processes serve them in burst mode with a no-op handler; jobs/s runs from the first job's
start to the last job's end over all workers. Each primary's share of the work is read from
INFO around the drain: the script calls it answered and the CPU seconds it used.

  spread-k  6 queues whose hash tags land on the first k primaries; fair workers
  hot-1     one queue (one slot: one primary)
  hot-N     the same queue sharded N ways (its shards on every primary)

The machine is shared and small: absolute numbers drift; compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import anyio  # noqa: E402
from redis.crc import key_slot  # noqa: E402

from aiojobs_redis import Job, RedisEngine, Settings, Worker  # noqa: E402

try:
    from aiojobs_redis import ShardedQueue
except ImportError:  # not exported at the top level before 0.2
    from aiojobs_redis.sharding import ShardedQueue


class Noop(Job):
    name = "bench.cluster.Noop"

    async def handle(self) -> None:
        return None


# -- the worker process -----------------------------------------------------------------------


async def work(args: argparse.Namespace) -> None:
    for spec in filter(None, args.shards.split(",")):
        queue, _, shards = spec.partition("=")
        ShardedQueue(queue, int(shards))
    first = last = 0.0
    count = 0

    class Timed(Noop):  # the same stored name, with timing
        name = Noop.name

        async def handle(self) -> None:
            nonlocal first, last, count
            now = time.time()
            first = first or now
            last = now
            count += 1

    settings = Settings(url=args.url, prefix=args.prefix)
    async with RedisEngine(settings) as engine:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.readline)  # "go"
        worker = Worker(engine, args.queues.split(","), concurrency=args.concurrency, burst=True, fair=True)
        await worker.run()
    print(json.dumps({"count": count, "first": first, "last": last}))


# -- the runner -------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    primaries_used: int
    jobs: int
    dispatch_jobs_per_s: float
    drain_jobs_per_s: float
    script_calls_per_primary: list[int]
    cpu_seconds_per_primary: list[float]


def queues_on(cluster: Any, primaries: list[Any], count: int, base: str) -> list[str]:
    """`count` queue names spread evenly over `primaries` (by their hash tag's slot)."""
    names: list[str] = []
    wanted = [primaries[i % len(primaries)] for i in range(count)]
    n = 0
    for node in wanted:
        while cluster.owner_of_slot(key_slot(f"{base}{n}".encode())) is not node:
            n += 1
        names.append(f"{base}{n}")
        n += 1
    return names


def start_workers(command: list[str], count: int) -> list[subprocess.Popen[str]]:
    """Start `count` worker processes and wait until each is connected."""
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def go_and_wait(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Let every worker start at once; their timings once the queues are empty."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def node_load(nodes: list[Any]) -> list[tuple[int, float]]:
    load = []
    for node in nodes:
        stats = node.info("commandstats").get("cmdstat_evalsha", {})
        cpu = node.info("cpu")
        load.append((int(stats.get("calls", 0)), float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])))  # type: ignore[arg-type]
    return load


async def scenario(
    name: str,
    url: str,
    primaries: list[Any],
    queues: list[str],
    shards: dict[str, int],
    args: argparse.Namespace,
) -> Row:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    settings = Settings(url=url, prefix=prefix)
    for queue, count in shards.items():
        ShardedQueue(queue, count)
    classes = [type(f"Noop_{i}", (Noop,), {"queue": q, "name": Noop.name}) for i, q in enumerate(queues)]
    async with RedisEngine(settings) as engine:
        jobs = [classes[i % len(classes)]({}) for i in range(args.jobs)]
        started = time.monotonic()
        await engine.dispatch_many(jobs, chunk=1000)
        dispatch_rate = args.jobs / (time.monotonic() - started)
        command = [
            sys.executable,
            __file__,
            "worker",
            "--url",
            url,
            "--prefix",
            prefix,
            "--queues",
            ",".join(dict.fromkeys(queues)),
            "--shards",
            ",".join(f"{q}={n}" for q, n in shards.items()),
            "--concurrency",
            str(args.concurrency),
        ]
        procs = await anyio.to_thread.run_sync(start_workers, command, args.workers)
        before = node_load(primaries)
        results = await anyio.to_thread.run_sync(go_and_wait, procs)
        after = node_load(primaries)
        stats = await engine.stats()
        assert sum(s.ready + s.running for s in stats) == 0, stats
        async for key in engine.redis.scan_iter(match=f"{prefix}*", count=1000):
            await engine.redis.delete(key)
    done = sum(r["count"] for r in results)
    assert done == args.jobs, (done, args.jobs)
    span = max(r["last"] for r in results if r["count"]) - min(r["first"] for r in results if r["count"])
    calls = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    cpu = [round(a[1] - b[1], 2) for a, b in zip(after, before, strict=True)]
    used = sum(1 for c in calls if c > args.workers * 10)
    return Row(name, used, args.jobs, round(dispatch_rate), round(done / span), calls, cpu)


async def run(args: argparse.Namespace) -> list[Row]:
    from cluster.deployments import ClusterDeployment, Node

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        server = Node(Path(tmp) / "standalone", "--save", "", "--appendonly", "yes")
        server.start()
        try:
            url = f"redis://127.0.0.1:{server.port}"
            queues = [f"spread-{i}" for i in range(6)]
            rows.append(await scenario("standalone", url, [server], queues, {}, args))
        finally:
            server.stop()
        with ClusterDeployment(Path(tmp) / "cluster", replicas=args.replicas) as cluster:
            primaries = cluster.primaries()
            for k in (1, 2, 3):
                queues = queues_on(cluster, primaries[:k], 6, f"spread{k}-")
                rows.append(await scenario(f"spread-{k}", cluster.url, primaries, queues, {}, args))
            rows.append(await scenario("hot-1", cluster.url, primaries, ["hot"], {}, args))
            sharded = {"hotsharded": args.shards}
            name = f"hot-{args.shards}"
            rows.append(await scenario(name, cluster.url, primaries, ["hotsharded"], sharded, args))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="role")
    worker = sub.add_parser("worker")
    worker.add_argument("--url", required=True)
    worker.add_argument("--prefix", required=True)
    worker.add_argument("--queues", required=True)
    worker.add_argument("--shards", default="")
    worker.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=0)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backend: dict[str, Any] = {"backend_options": {"use_uvloop": True}} if os.name != "nt" else {}
    if args.role == "worker":
        anyio.run(work, args, **backend)
        return
    if args.quick:
        args.jobs, args.workers = 6_000, 2
    rows = anyio.run(run, args, **backend)
    print(
        f"\n{args.jobs} no-op jobs per scenario, {args.workers} worker processes x concurrency "
        f"{args.concurrency}, {args.replicas} replica(s) per primary, {os.cpu_count()} CPUs\n"
    )
    header = f"{'scenario':<12} {'primaries':>9} {'dispatch/s':>11} {'drain/s':>9}"
    print(f"{header}  script calls / CPU s per primary")
    for row in rows:
        share = ", ".join(
            f"{c}/{s:.1f}"
            for c, s in zip(row.script_calls_per_primary, row.cpu_seconds_per_primary, strict=True)
        )
        cells = f"{row.scenario:<12} {row.primaries_used:>9} {row.dispatch_jobs_per_s:>11}"
        print(f"{cells} {row.drain_jobs_per_s:>9}  {share}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
