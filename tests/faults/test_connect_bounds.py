"""A Redis that accepts connections but never answers (SIGSTOP): nothing waits past
`dispatch_timeout`. Opening the engine, every admin and dashboard read, the doctor, and
the CLI commands raise EngineUnavailable (or exit 1 with one line) within it.

Each test runs against a private redis-server on loopback that it stops with SIGSTOP.
redis-py alone waits far longer there: every replay of a command reconnects, and every
reconnect waits a socket timeout for the handshake (about 80 s with the default settings).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import to_thread
from support.redis_server import RedisServer

from aiojobs_redis import EngineUnavailable, Job, RedisEngine, Settings, connect, use_engine
from aiojobs_redis.doctor import diagnose

pytestmark = pytest.mark.anyio

TIMEOUT = 2.0  # the engines' dispatch_timeout here
MARGIN = 5.0  # allowance for a busy machine
CLI_DEFAULT_TIMEOUT = 10.0  # the CLI's: the Settings default
GUARD = 40.0  # a test still waiting this long has hung (redis-py alone: ~80 s)


class Frozen(Job):
    queue = "frozen"

    async def handle(self) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("frozen-redis"), aof=False) as started:
        yield started


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """Redis stopped: the kernel still accepts connections, nothing answers."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.proc.send_signal(signal.SIGCONT)


def settings(server: RedisServer, prefix: str) -> Settings:
    return Settings(url=server.url, prefix=prefix, dispatch_timeout=TIMEOUT)


async def fails_in_time(call: Callable[[], Awaitable[Any]]) -> tuple[BaseException, float]:
    """The error `call` raised and the seconds it took; fails the test if it hangs."""
    started = time.monotonic()
    with anyio.fail_after(GUARD), pytest.raises(EngineUnavailable) as raised:
        await call()
    return raised.value, time.monotonic() - started


@pytest.fixture
async def seeded(server: RedisServer, prefix: str) -> AsyncIterator[RedisEngine]:
    """An open engine with a queue, a failed job and some telemetry under `prefix`."""
    async with RedisEngine(settings(server, prefix)) as engine:
        with use_engine(engine):
            await Frozen().dispatch({"n": 1})
        yield engine
    async with RedisEngine(settings(server, prefix)) as cleaner:
        keys = [key async for key in cleaner.redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleaner.redis.delete(*keys)


async def test_opening_the_engine_fails_within_dispatch_timeout(server: RedisServer, prefix: str) -> None:
    async def open_it() -> None:
        async with connect(server.url, prefix=prefix, dispatch_timeout=TIMEOUT):
            pass

    with frozen(server):
        error, seconds = await fails_in_time(open_it)
        plain_error, plain_seconds = await fails_in_time(partial(RedisEngine(settings(server, prefix)).ping))
    assert seconds < TIMEOUT + MARGIN and plain_seconds < TIMEOUT + MARGIN
    assert str(error) == f"connect: Redis did not answer within {TIMEOUT:g} s"
    assert str(plain_error) == str(error)
    # Redis is back: the same settings open at once.
    async with connect(server.url, prefix=prefix, dispatch_timeout=TIMEOUT) as engine:
        assert await engine.stats() == []


async def test_every_admin_call_fails_within_dispatch_timeout(
    server: RedisServer, seeded: RedisEngine
) -> None:
    engine = seeded
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "known_queues": engine.known_queues,
        "stats": engine.stats,
        "stats of a queue": partial(engine.stats, "frozen"),
        "format_version": engine.format_version,
        "get_job": partial(engine.get_job, "frozen", "abc"),
        "running_jobs": partial(engine.running_jobs, ["frozen"]),
        "failed_list": engine.failed_list,
        "failed_retry ids": partial(engine.failed_retry, ["abc"], queue="frozen"),
        "failed_retry all": partial(engine.failed_retry, None),
        "failed_forget": partial(engine.failed_forget, ["abc"]),
        "failed_flush": engine.failed_flush,
        "recent_events": partial(engine.recent_events, ["frozen"]),
        "throughput": partial(engine.throughput, ["frozen"], 0),
        "alive_workers": partial(engine.alive_workers, 0),
        "redis_time_ms": partial(engine.redis_time_ms, max_age_ms=0),
        "doctor": partial(diagnose, engine),
        "register_queues": partial(engine.register_queues, ["not-yet-registered"]),  # a worker's start
    }
    results: dict[str, tuple[BaseException, float]] = {}

    async def run(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        results[name] = await fails_in_time(call)

    with frozen(server):
        async with anyio.create_task_group() as tg:  # side by side: each on its own connection
            for name, call in calls.items():
                tg.start_soon(run, name, call)
    slow = {name: round(seconds, 1) for name, (_, seconds) in results.items() if seconds >= TIMEOUT + MARGIN}
    assert not slow, slow
    for name, (error, _) in results.items():
        assert f"did not answer within {TIMEOUT:g} s" in str(error), (name, error)
    assert (await engine.stats())[0].ready == 1  # and the engine works again


# -- the command line --------------------------------------------------------------------------


def cli(args: list[str], url: str, prefix: str) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOB_ENGINE", "REDIS_JOB_DB")}
    env.update(REDIS_URL=url, REDIS_JOB_PREFIX=prefix)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "aiojobs_redis", *args],
        env=env,
        cwd=Path(__file__).resolve().parent.parent / "e2e",
        capture_output=True,
        text=True,
        timeout=GUARD + 20,
    )
    return result.returncode, result.stderr, time.monotonic() - started


@pytest.mark.slow
async def test_cli_commands_fail_within_dispatch_timeout(server: RedisServer, prefix: str) -> None:
    commands = {
        "stats": ["stats"],
        "failed list": ["failed", "list"],
        "failed retry": ["failed", "retry", "--all"],
        "doctor": ["doctor"],
        "work": ["work", "--import", "jobapp", "--burst", "--wait-for-redis", "1"],
    }
    results: dict[str, tuple[int, str, float]] = {}

    async def run(name: str, args: list[str]) -> None:
        results[name] = await to_thread.run_sync(cli, args, server.url, prefix)

    with frozen(server):
        async with anyio.create_task_group() as tg:
            for name, args in commands.items():
                tg.start_soon(run, name, args)
    # Python's start-up on a busy machine adds seconds: the margin is wider than in-process.
    bound = CLI_DEFAULT_TIMEOUT + 3 * MARGIN
    for name, (code, stderr, seconds) in results.items():
        assert code == 1, (name, stderr)
        assert seconds < bound, (name, seconds, stderr)
        last = stderr.rstrip().splitlines()[-1]
        assert last == "aiojobs-redis: error: connect: Redis did not answer within 10 s", (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)


# -- error text --------------------------------------------------------------------------------


async def test_errors_name_their_cause_once(tmp_path: Path, prefix: str) -> None:
    """Redis gone after the engine opened: one "Redis unavailable", one cause, no nesting."""
    gone = RedisServer(tmp_path / "gone", aof=False)
    gone.start()
    async with RedisEngine(settings(gone, prefix)) as engine:
        with use_engine(engine):
            await Frozen().dispatch({})
        gone.kill()
        errors = [
            (await fails_in_time(call))[0]
            for call in (partial(engine.dispatch, Frozen({})), engine.ping, engine.stats, engine.failed_list)
        ]
    for error in errors:
        text = str(error)
        assert text.count("Redis unavailable") == 1, text
        assert text.count("ConnectionError") == 1, text
        assert "EngineUnavailable" not in text, text
        assert text.split(": ", 1)[1].startswith("Redis unavailable (ConnectionError: "), text


@pytest.mark.slow
def test_a_waiting_worker_names_the_cause_once(prefix: str) -> None:
    code, stderr, _ = cli(
        ["work", "--import", "jobapp", "--wait-for-redis", "1"], "redis://127.0.0.1:1", prefix
    )
    assert code == 1, stderr
    waiting = [line for line in stderr.splitlines() if "waiting for Redis" in line]
    assert waiting, stderr
    for line in [*waiting, stderr.rstrip().splitlines()[-1]]:
        assert line.lower().count("unavailable") == 1, line
        assert line.count("Connection refused") == 1, line


async def test_an_app_lifespan_whose_worker_cannot_start_fails_in_time(
    server: RedisServer, prefix: str
) -> None:
    """Redis freezes after the engine opened, before the in-process worker registered its
    queues (the app's own lifespan runs in between): the startup fails, it does not hang."""
    from contextlib import asynccontextmanager

    from aiojobs_redis.integrations.asgi import lifespan

    @asynccontextmanager
    async def freeze_then_go_on(app: object) -> AsyncIterator[None]:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        yield

    jobs = lifespan(
        freeze_then_go_on, worker_queues=["frozen"], url=server.url, prefix=prefix, dispatch_timeout=TIMEOUT
    )
    try:

        async def start_app() -> None:
            async with jobs(object()):
                raise AssertionError("the app started on a frozen Redis")

        error, took = await fails_in_time(start_app)
    finally:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGCONT)
    assert "did not answer" in str(error) or "unavailable" in str(error).lower(), error
    assert took < TIMEOUT * 2 + MARGIN, took
