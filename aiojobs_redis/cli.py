"""The command line: the only place that parses argv, installs signal handlers and sets up logging.

aiojobs-redis work --import app.jobs --queue payments --queue default --concurrency 100
aiojobs-redis work --import app.jobs --queue tenant-a --queue tenant-b --fair
aiojobs-redis failed list|retry|forget|flush ...
aiojobs-redis stats
aiojobs-redis dashboard --port 8080
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson

from . import doctor
from .config import Settings
from .engine import RedisEngine
from .errors import AiojobsRedisError, EngineUnavailable
from .metrics import PrometheusMetrics
from .records import JobInfo
from .retry import Backoff
from .versioning import describe_format
from .worker import Worker, drain_on_signal

log = logging.getLogger("aiojobs_redis.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiojobs-redis", description=__doc__.split("\n")[0])
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", help="Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379)")
    connection.add_argument("--prefix", help="key prefix (default: $REDIS_JOB_PREFIX or jobs:)")
    connection.add_argument(
        "--db", type=_non_negative_int, help="database number (default: $REDIS_JOB_DB or 0)"
    )
    connection.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    work = commands.add_parser("work", parents=[connection], help="run a worker")
    work.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module defining Job classes, resolved from the current directory (repeatable)",
    )
    work.add_argument(
        "--queue",
        dest="queues",
        action="append",
        metavar="QUEUE",
        help="queue to serve, in priority order (repeatable; default: default)",
    )
    work.add_argument(
        "--fair",
        action="store_true",
        help="serve the queues side by side, sharing claims equally, instead of in priority order",
    )
    work.add_argument("--concurrency", type=_positive_int, default=100)
    work.add_argument(
        "--lease",
        type=_positive_float,
        default=30.0,
        help="seconds a running job's lease lasts; renewed while it runs",
    )
    work.add_argument("--burst", action="store_true", help="exit once no job is ready")
    work.add_argument("--max-jobs", type=_positive_int, help="exit after claiming this many jobs")
    work.add_argument("--max-time", type=_positive_float, help="exit after this many seconds")
    work.add_argument(
        "--grace",
        type=_non_negative_float,
        default=30.0,
        help="seconds running jobs may take to finish on shutdown",
    )
    work.add_argument("--reap-interval", type=_positive_float, default=5.0)
    work.add_argument(
        "--wait-for-redis",
        type=_non_negative_float,
        default=60.0,
        metavar="SECONDS",
        help="how long a starting worker waits for an unreachable Redis before exiting (default 60)",
    )
    work.add_argument(
        "--max-stalls",
        type=_non_negative_int,
        default=3,
        help="lapsed leases a job may cause before it is failed",
    )
    work.add_argument(
        "--metrics-port",
        type=_positive_int,
        metavar="PORT",
        help="serve Prometheus metrics over HTTP on this port (needs the 'metrics' extra)",
    )
    work.add_argument("--metrics-addr", default="127.0.0.1", help="address for --metrics-port")
    work.add_argument(
        "--no-telemetry",
        dest="telemetry",
        action="store_false",
        help="record no job events, throughput or heartbeat in Redis (the dashboard shows less)",
    )

    failed = commands.add_parser("failed", help="inspect and act on failed jobs")
    failed_cmds = failed.add_subparsers(dest="failed_command", required=True)
    listing = failed_cmds.add_parser("list", parents=[connection], help="list failed jobs")
    listing.add_argument("--queue")
    listing.add_argument("--limit", type=_positive_int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    retry = failed_cmds.add_parser("retry", parents=[connection], help="run failed jobs again")
    retry.add_argument("ids", nargs="*", metavar="JOB_ID")
    retry.add_argument("--all", action="store_true")
    retry.add_argument("--queue")
    forget = failed_cmds.add_parser("forget", parents=[connection], help="delete failed jobs")
    forget.add_argument("ids", nargs="+", metavar="JOB_ID")
    forget.add_argument("--queue")
    flush = failed_cmds.add_parser("flush", parents=[connection], help="delete all failed jobs")
    flush.add_argument("--queue")

    stats = commands.add_parser("stats", parents=[connection], help="jobs per queue and state")
    stats.add_argument("--queue")
    stats.add_argument("--json", action="store_true")

    checks = commands.add_parser("doctor", parents=[connection], help="check the Redis deployment")
    checks.add_argument("--strict", action="store_true", help="exit 1 on any warning or error")

    board = commands.add_parser("dashboard", parents=[connection], help="serve the web dashboard")
    board.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    board.add_argument("--port", type=_positive_int, default=8080)
    board.add_argument(
        "--token",
        default=os.environ.get("AIOJOBS_DASHBOARD_TOKEN"),
        help="require this token: open /?token=... once (default: $AIOJOBS_DASHBOARD_TOKEN)",
    )
    board.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        default=os.environ.get("AIOJOBS_DASHBOARD_BASIC_AUTH"),
        help="require HTTP basic auth (default: $AIOJOBS_DASHBOARD_BASIC_AUTH)",
    )
    board.add_argument("--show-payloads", action="store_true", help="show failed jobs' payloads")
    board.add_argument("--read-only", action="store_true", help="no retry or forget actions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "failed" and args.failed_command == "retry" and bool(args.ids) == args.all:
        parser.error("failed retry needs job ids or --all (not both)")
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.from_env(url=args.url, prefix=args.prefix, db=args.db, engine="redis")
        if args.command == "work":
            _import_job_modules(args.imports)
        return anyio.run(_run, args, settings, **_backend())
    except AiojobsRedisError as exc:
        print(f"aiojobs-redis: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _backend() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"backend_options": {"use_uvloop": True}}


def _import_job_modules(modules: Sequence[str]) -> None:
    """Import the modules that define Job classes, from the current directory first."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise AiojobsRedisError(f"cannot import {module!r}: {exc}") from exc


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "work":
        # A worker started alongside Redis, or during a restart or failover, waits for it.
        engine = RedisEngine(settings)
        try:
            await _wait_for_redis(engine, args.wait_for_redis)
            return await _work(engine, args)
        finally:
            await engine.aclose()
    async with RedisEngine(settings) as engine:
        if args.command == "stats":
            return await _stats(engine, args)
        if args.command == "doctor":
            findings = await doctor.diagnose(engine)
            print(doctor.format_findings(findings))
            return doctor.exit_code(findings, strict=args.strict)
        if args.command == "dashboard":
            return await _dashboard(engine, args)
        return await _failed(engine, args)


async def _wait_for_redis(engine: RedisEngine, patience: float) -> None:
    """Ping until Redis answers; after `patience` seconds re-raise EngineUnavailable.

    Each ping gives up after `dispatch_timeout`. A ConfigurationError (a refused password, a
    certificate that does not verify) is raised at once: waiting cannot fix it.
    """
    backoff = Backoff(first=0.1, cap=2.0)
    deadline = time.monotonic() + patience
    while True:
        try:
            await engine.ping()
            return
        except EngineUnavailable as exc:
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("waiting for Redis at start: %s; next try in %.2f s", exc, delay)
            await anyio.sleep(delay)


async def _work(engine: RedisEngine, args: argparse.Namespace) -> int:
    await doctor.check_on_start(engine)  # logs what threatens the guarantees; never stops the worker
    metrics = PrometheusMetrics(port=args.metrics_port, addr=args.metrics_addr) if args.metrics_port else None
    worker = Worker(
        engine,
        args.queues or ["default"],
        concurrency=args.concurrency,
        lease=args.lease,
        burst=args.burst,
        max_jobs=args.max_jobs,
        max_time=args.max_time,
        grace=args.grace,
        reap_interval=args.reap_interval,
        max_stalls=args.max_stalls,
        fair=args.fair,
        metrics=metrics,
        telemetry=args.telemetry,
    )
    await drain_on_signal(worker)
    return 0


async def _dashboard(engine: RedisEngine, args: argparse.Namespace) -> int:
    from .dashboard.server import DashboardServer  # needs the 'dashboard' extra

    server = DashboardServer(
        engine,
        host=args.host,
        port=args.port,
        token=args.token,
        basic_auth=args.basic_auth,
        show_payloads=args.show_payloads,
        read_only=args.read_only,
    )
    server.bind()

    async def stop_on_signal() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s: stopping the dashboard", signal.Signals(signum).name)
                server.stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal)
        await server.run()
        tg.cancel_scope.cancel()
    return 0


async def _stats(engine: RedisEngine, args: argparse.Namespace) -> int:
    rows = await engine.stats(args.queue)
    version = await engine.format_version()
    if args.json:
        for row in rows:
            print(orjson.dumps({**dataclasses.asdict(row), "format_version": version}).decode())
        return 0
    print(f"{'queue':<24} {'ready':>9} {'delayed':>9} {'running':>9} {'failed':>9}")
    for row in rows:
        print(f"{row.queue:<24} {row.ready:>9} {row.delayed:>9} {row.running:>9} {row.failed:>9}")
    print(f"\n{describe_format(version)}")
    return 0


async def _failed(engine: RedisEngine, args: argparse.Namespace) -> int:
    command = args.failed_command
    if command == "list":
        jobs = await engine.failed_list(args.queue, limit=args.limit)
        if args.json:
            for job in jobs:
                print(orjson.dumps(job).decode())
        else:
            _print_failed(jobs)
        return 0
    if command == "retry":
        count = await engine.failed_retry(None if args.all else args.ids, queue=args.queue)
        print(f"requeued {count} job(s)")
        return 0 if args.all or count == len(args.ids) else 1
    if command == "forget":
        count = await engine.failed_forget(args.ids, queue=args.queue)
        print(f"forgot {count} job(s)")
        return 0 if count == len(args.ids) else 1
    count = await engine.failed_flush(args.queue)
    print(f"flushed {count} job(s)")
    return 0


def _print_failed(jobs: Sequence[JobInfo]) -> None:
    if not jobs:
        print("no failed jobs")
        return
    print(f"{'id':<20} {'queue':<16} {'job':<36} {'attempts':>8}  {'failed at':<20} error")
    for job in jobs:
        error = job.error or {}
        when = (
            datetime.fromtimestamp(job.finished_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if job.finished_ms
            else "-"
        )
        attempts = f"{job.attempts}/{job.max_attempts or '?'}"
        summary = f"[{error.get('reason', '?')}] {error.get('type', '')}: {error.get('message', '')}"
        print(
            f"{job.id:<20} {job.queue:<16} {(job.name or '?')[:36]:<36} {attempts:>8}  "
            f"{when:<20} {summary.strip()[:200]}"
        )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
