"""The command line: the only place that parses argv, installs signal handlers and sets up logging.

aiojobs-redis work --import app.jobs --queue payments --queue default --concurrency 100
aiojobs-redis work --import app.jobs --queue tenant-a --queue tenant-b --fair
aiojobs-redis work --import app.jobs --middleware app.mw:tenant
aiojobs-redis failed list|show|retry|forget|flush ...
aiojobs-redis abort JOB_ID [--queue Q] [--reason TEXT]
aiojobs-redis limits show|set|clear QUEUE ...
aiojobs-redis job JOB_ID [--queue Q]
aiojobs-redis flow JOB_ID [--queue Q] | batch BATCH_ID --queue Q
aiojobs-redis pause|resume QUEUE [QUEUE ...]
aiojobs-redis stats
aiojobs-redis dashboard --port 8080
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import orjson

from . import (
    cli_abort,
    cli_failed,
    cli_flow,
    cli_job,
    cli_limits,
    cli_pause,
    cli_schedules,
    doctor,
    middleware,
    registry,
)
from .config import Settings
from .engine import RedisEngine
from .errors import AiojobsRedisError, EngineUnavailable
from .keys import FORMAT_VERSION
from .metrics import PrometheusMetrics
from .retry import Backoff
from .versioning import describe_format
from .worker import Worker, drain_on_signal

log = logging.getLogger("aiojobs_redis.cli")


DESCRIPTION = "Run workers for aiojobs-redis jobs, and inspect the queues and failed jobs in Redis."
EPILOG = """\
examples:
  aiojobs-redis work --import app.jobs                  serve the queues of app.jobs's Job classes
  aiojobs-redis work --import app.jobs --queue payments --queue default
  aiojobs-redis work --import app.jobs --burst          run what is ready, then exit
  aiojobs-redis stats                                   jobs per queue and state
  aiojobs-redis pause payments                          start no more jobs of a queue (resume: again)
  aiojobs-redis failed list --queue payments
  aiojobs-redis failed retry --all
  aiojobs-redis flow JOB_ID                             the chain / batch / depends_on flow of a job
  aiojobs-redis doctor                                  check the Redis deployment
  aiojobs-redis dashboard --port 8080

Redis is found through $REDIS_URL (or --url), keys under $REDIS_JOB_PREFIX (or --prefix).
Run `aiojobs-redis COMMAND --help` for a command's options.
"""
WORK_EPILOG = """\
Without --queue, the worker serves every queue the imported Job classes use, side by side
(as with --fair); with no Job class imported it serves `default` and warns.

exit status: 0 once stopped (burst end, --max-jobs, --max-time, or a drain after the first
SIGINT/SIGTERM); 130 or 143 when a second SIGINT or SIGTERM stopped it at once, abandoning
its running jobs (they run again once their lease lapses); 1 on an error.
"""
DOCTOR_EPILOG = """\
exit status:
  0  no ERROR found (WARNINGs allowed unless --strict)
  1  an ERROR was found (with --strict: an ERROR or a WARNING), or Redis could not be reached
  2  bad command line
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiojobs-redis",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=_version_text(),
        help="print the version and the data format version it writes, then exit",
    )
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", help="Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379)")
    connection.add_argument("--prefix", help="key prefix (default: $REDIS_JOB_PREFIX or jobs:)")
    connection.add_argument(
        "--db", type=whole_number_at_least_0, help="database number (default: $REDIS_JOB_DB or 0)"
    )
    connection.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log on stderr (default: INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    work = commands.add_parser(
        "work",
        parents=[connection],
        help="run a worker",
        description="Run a worker: claim jobs from the queues and run them, until stopped.",
        epilog=WORK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    work.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module defining Job classes, resolved from the current directory, e.g. app.jobs "
        "(repeatable; default: none)",
    )
    work.add_argument(
        "--middleware",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="middleware to run around every job's handle(), e.g. app.mw:tenant, imported like "
        "--import (repeatable, outermost first; default: none)",
    )
    work.add_argument(
        "--queue",
        dest="queues",
        action="append",
        metavar="QUEUE",
        help="queue to serve, in priority order (repeatable; default: the queues of the imported "
        "Job classes, side by side)",
    )
    work.add_argument(
        "--fair",
        action="store_true",
        help="serve the queues side by side, sharing claims equally, instead of in priority order",
    )
    work.add_argument(
        "--concurrency",
        type=whole_number_at_least_1,
        default=100,
        metavar="N",
        help="jobs run at the same time (default: 100)",
    )
    work.add_argument(
        "--lease",
        type=seconds_above_0,
        default=30.0,
        metavar="SECONDS",
        help="how long a running job's lease lasts; renewed while it runs; a job whose worker "
        "died runs again once it lapses (default: 30)",
    )
    work.add_argument("--burst", action="store_true", help="exit once no job is ready")
    work.add_argument(
        "--max-jobs",
        type=whole_number_at_least_1,
        metavar="N",
        help="exit after claiming this many jobs (default: no limit)",
    )
    work.add_argument(
        "--max-time",
        type=seconds_above_0,
        metavar="SECONDS",
        help="exit after this many seconds (default: no limit)",
    )
    work.add_argument(
        "--grace",
        type=seconds_at_least_0,
        default=30.0,
        metavar="SECONDS",
        help="on shutdown, how long running jobs may take to finish before they are handed back "
        "to their queue (default: 30)",
    )
    work.add_argument(
        "--reap-interval",
        type=seconds_above_0,
        default=5.0,
        metavar="SECONDS",
        help="how often to look for jobs whose lease lapsed and return them to their queue (default: 5)",
    )
    work.add_argument(
        "--abort-check",
        type=seconds_above_0,
        default=1.0,
        metavar="SECONDS",
        help="how often, while jobs run, to look for aborted ones and cancel them (default: 1)",
    )
    work.add_argument(
        "--wait-for-redis",
        type=seconds_at_least_0,
        default=60.0,
        metavar="SECONDS",
        help="how long a starting worker waits for an unreachable Redis before exiting (default: 60)",
    )
    work.add_argument(
        "--unknown-job-grace",
        type=seconds_at_least_0,
        default=3600.0,
        metavar="SECONDS",
        help="a job whose name no imported class has is put back (no attempt used) until it has "
        "been due this long, then failed as unknown_job; 0 fails it at once (default: 3600)",
    )
    work.add_argument(
        "--max-stalls",
        type=whole_number_at_least_0,
        default=3,
        metavar="N",
        help="lapsed leases a job may cause before it is failed (default: 3)",
    )
    work.add_argument(
        "--quiet-jobs",
        dest="log_jobs",
        action="store_false",
        help="do not log each finished job at INFO (retries and failures are still logged)",
    )
    work.add_argument(
        "--metrics-port",
        type=whole_number_at_least_1,
        metavar="PORT",
        help="serve Prometheus metrics over HTTP on this port (needs the 'metrics' extra; default: off)",
    )
    work.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address for --metrics-port (default: 127.0.0.1)",
    )
    work.add_argument(
        "--no-telemetry",
        dest="telemetry",
        action="store_false",
        help="record no job events, throughput or heartbeat in Redis (the dashboard shows less)",
    )

    work.add_argument(
        "--no-schedules",
        dest="schedules",
        action="store_false",
        help="fire no schedules here (default: fire those of the imported Job classes of the queues served)",
    )

    cli_failed.add_commands(commands, connection, whole_number_at_least_1, whole_number_at_least_0)
    cli_abort.add_command(commands, connection)
    cli_pause.add_commands(commands, connection)
    cli_schedules.add_commands(commands, connection)
    cli_limits.add_commands(commands, connection)
    cli_job.add_command(commands, connection)
    cli_flow.add_commands(commands, connection)

    stats = commands.add_parser("stats", parents=[connection], help="jobs per queue and state")
    stats.add_argument("--queue", help="only this queue, with its shards (default: every queue)")
    stats.add_argument("--json", action="store_true", help="one JSON object per queue and line")

    checks = commands.add_parser(
        "doctor",
        parents=[connection],
        help="check the Redis deployment",
        description="Check the Redis deployment against what the job guarantees need: "
        "persistence, eviction policy, version, replica role, clock, transport, data format.",
        epilog=DOCTOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    checks.add_argument("--strict", action="store_true", help="exit 1 on a warning too, not only on an error")

    board = commands.add_parser("dashboard", parents=[connection], help="serve the web dashboard")
    board.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    board.add_argument(
        "--port", type=whole_number_at_least_1, default=8080, help="port to bind (default: 8080)"
    )
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
    board.add_argument(
        "--show-payloads",
        action="store_true",
        help="show payloads on the failed list, job and queue pages (they may hold secrets; default: hidden)",
    )
    board.add_argument(
        "--read-only", action="store_true", help="no actions (retry, forget, abort, pause, resume)"
    )

    server = commands.add_parser(
        "server", help="run a Valkey server for development, in the foreground (the 'embedded' extra)"
    )
    server.add_argument("--port", type=whole_number_at_least_1, help="port (default: 16379 or the next free)")
    server.add_argument("--aof", action="store_true", help="keep an append-only file while it runs")
    return parser


def _version_text() -> str:
    try:
        version = importlib.metadata.version("aiojobs-redis")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        version = "unknown"
    return f"aiojobs-redis {version} (data format version {FORMAT_VERSION})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "server":
        return _server(args)
    cli_failed.check_args(args)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.from_env(url=args.url, prefix=args.prefix, db=args.db, engine="redis")
        if args.command == "work":
            _import_job_modules(args.imports)
            args.middleware = [middleware.load(spec) for spec in args.middleware]
        return anyio.run(_run, args, settings, **_backend())
    except AiojobsRedisError as exc:
        print(f"aiojobs-redis: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (`failed list | head`): no traceback, and none again when Python
        # flushes stdout at exit (the recipe in the signal module's docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a command killed by the signal


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
        as_module = _module_name_of_path(module)
        if as_module is not None:
            raise AiojobsRedisError(
                f"cannot import {module!r}: --import takes a module name, not a file; "
                f"give a module name, e.g. --import {as_module}"
            )
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise AiojobsRedisError(f"cannot import {module!r}: {exc}") from exc


def _module_name_of_path(given: str) -> str | None:
    """The module name for a file path given to --import (payjobs.py, app/jobs.py); else None."""
    if not given.endswith(".py") and "/" not in given and os.sep not in given and not given.startswith("."):
        return None
    parts = given.removesuffix(".py").replace(os.sep, "/").split("/")
    return ".".join(part for part in parts if part not in ("", ".")) or None


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
        if args.command == "abort":
            return await cli_abort.run(engine, args)
        if args.command in ("pause", "resume"):
            return await cli_pause.run(engine, args)
        if args.command == "schedules":
            return await cli_schedules.run(engine, args)
        if args.command == "limits":
            return await cli_limits.run(engine, args)
        if args.command == "job":
            return await cli_job.run(engine, args)
        if args.command in ("flow", "batch"):
            return await cli_flow.run(engine, args)
        return await cli_failed.run(engine, args)


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
    queues, fair = _queues_to_serve(args.queues, fair=args.fair)
    worker = Worker(
        engine,
        queues,
        concurrency=args.concurrency,
        lease=args.lease,
        burst=args.burst,
        max_jobs=args.max_jobs,
        max_time=args.max_time,
        grace=args.grace,
        reap_interval=args.reap_interval,
        abort_check=args.abort_check,
        max_stalls=args.max_stalls,
        fair=fair,
        unknown_job_grace=args.unknown_job_grace,
        metrics=metrics,
        telemetry=args.telemetry,
        log_jobs=args.log_jobs,
        schedules=args.schedules,
        middleware=args.middleware,
    )
    return await drain_on_signal(worker)


def _queues_to_serve(given: Sequence[str] | None, *, fair: bool) -> tuple[list[str], bool]:
    """The queues a `work` command serves, and whether side by side; logs the job classes.

    Without --queue: every queue of the imported Job classes, side by side (none is
    preferred), or `default` when no class was imported.
    """
    classes = registry.runnable()
    if not classes:
        log.warning("no Job classes imported; pass --import MODULE (the module that defines them)")
    for cls in classes:
        log.info("job %s (%s.%s), queue %s", cls.name, cls.__module__, cls.__qualname__, cls.queue)
    if given:
        return list(given), fair
    return registry.job_queues() or ["default"], True


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


def _server(args: argparse.Namespace) -> int:
    """Run the embedded server on loopback until Ctrl-C, SIGTERM or SIGHUP; its data goes with it."""
    from .embedded import embedded_server

    stop_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        with embedded_server(port=args.port, aof=args.aof) as url:
            # Blocked only now: the server's watcher process must not inherit the mask.
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            print(f"Valkey server for development at {url}; in another terminal:", flush=True)
            print(f"    export REDIS_URL={url}", flush=True)
            print("Ctrl-C stops it, and its data is gone then.", flush=True)
            received = signal.sigwait(stop_signals)
            print(f"received {signal.Signals(received).name}: stopping the server", flush=True)
    except AiojobsRedisError as exc:
        print(f"aiojobs-redis: error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _stats(engine: RedisEngine, args: argparse.Namespace) -> int:
    rows = await engine.stats(args.queue)
    version = await engine.format_version()
    if args.json:
        for row in rows:
            print(orjson.dumps({**dataclasses.asdict(row), "format_version": version}).decode())
        return 0
    header = f"{'waiting':>9} {'ready':>9} {'delayed':>9} {'running':>9} {'failed':>9} {'paused':>7}"
    print(f"{'queue':<24} {header}")
    for row in rows:
        paused = "yes" if row.paused else "no"
        counts = f"{row.waiting:>9} {row.ready:>9} {row.delayed:>9} {row.running:>9} {row.failed:>9}"
        print(f"{row.queue:<24} {counts} {paused:>7}")
    dropped = ", ".join(f"{row.queue} {row.failed_dropped}" for row in rows if row.failed_dropped)
    if dropped:
        print(f"\nfailed jobs dropped by retention: {dropped}")
    print(f"\n{describe_format(version)}")
    return 0


# Argument types: argparse shows an ArgumentTypeError's message as it is.


def whole_number_at_least_1(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a whole number >= 1")


def whole_number_at_least_0(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "a whole number >= 0")


def seconds_above_0(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "a number of seconds > 0")


def seconds_at_least_0(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, "a number of seconds >= 0")


_N = TypeVar("_N", int, float)


def _number(text: str, kind: Callable[[str], _N], valid: Callable[[_N], bool], what: str) -> _N:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
