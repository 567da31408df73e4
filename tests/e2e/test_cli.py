"""End-to-end tests of the command line: real `aiojobs-redis` subprocesses on the real Redis.

The worker runs with ``cwd=tests/e2e`` and ``--import jobapp``, as a user would run it next
to their own job module. Jobs are dispatched from the test through the `engine` fixture;
handlers count their runs in Redis (see jobapp), so every assertion is about what really
happened. Each test has its own key prefix; the worker gets it through REDIS_JOB_PREFIX
(the handlers need it too), the inspection commands through ``--prefix``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio import to_thread
from jobapp import (
    FAIL_MESSAGE,
    OTHER_QUEUE,
    PERMANENT_MESSAGE,
    AlwaysFails,
    Count,
    GivesUp,
    OtherQueueFails,
    count_key,
    runs_key,
)
from redis.asyncio import Redis
from support.redis_server import RedisServer
from support.wait import eventually

from aiojobs_redis import Job, RedisEngine, Settings, use_engine

E2E_DIR = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow

CLI_TIMEOUT = 60.0
PYTHON_M = (sys.executable, "-m", "aiojobs_redis")
CONSOLE_SCRIPT = (str(Path(sys.executable).with_name("aiojobs-redis")),)
STATS_HEADER = ["queue", "waiting", "ready", "delayed", "running", "failed", "paused"]
# Variables of the package that the host environment must not leak into the subprocesses.
PACKAGE_ENV = ("JOB_ENGINE", "REDIS_URL", "REDIS_JOB_PREFIX", "REDIS_JOB_DB")


class Ghost(Job):
    """Defined only in the test process: the worker has no class of this name."""

    name = "jobapp.Ghost"
    attempts = 3

    async def handle(self) -> None:  # pragma: no cover - the worker cannot run it
        raise AssertionError("a Ghost job must never run")


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.args)}\nexit {self.returncode} after {self.seconds:.2f} s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def cli_env(redis_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PACKAGE_ENV}
    env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


def run_sync(args: Sequence[str], *, redis_url: str, env: Mapping[str, str] | None = None) -> Result:
    """Run a command line synchronously (for the tests that need no fixture engine)."""
    started = time.monotonic()
    done = subprocess.run(
        list(args),
        cwd=E2E_DIR,
        env=cli_env(redis_url, env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    return Result(tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started)


async def run(args: Sequence[str], *, redis_url: str, env: Mapping[str, str] | None = None) -> Result:
    started = time.monotonic()
    with anyio.fail_after(CLI_TIMEOUT):
        done = await anyio.run_process(list(args), cwd=E2E_DIR, env=cli_env(redis_url, env), check=False)
    return Result(
        tuple(args),
        done.returncode,
        done.stdout.decode(),
        done.stderr.decode(),
        time.monotonic() - started,
    )


def logged_between(log: str, first: str, last: str) -> float:
    """Seconds between the log lines that say `first` and `last` (their timestamps)."""

    def at(word: str) -> datetime:
        line = next(line for line in log.splitlines() if word in line)
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")

    return (at(last) - at(first)).total_seconds()


async def work(prefix: str, redis_url: str, *options: str, command: Sequence[str] = PYTHON_M) -> Result:
    """`aiojobs-redis work --import jobapp ...`, the prefix given by REDIS_JOB_PREFIX."""
    return await run(
        [*command, "work", "--import", "jobapp", *options],
        redis_url=redis_url,
        env={"REDIS_JOB_PREFIX": prefix},
    )


async def inspect(prefix: str, redis_url: str, *args: str) -> Result:
    """An inspection command (stats, failed ...), the prefix given by --prefix."""
    return await run([*PYTHON_M, *args, "--prefix", prefix], redis_url=redis_url)


def parse_stats(out: str) -> dict[str, tuple[int, int, int, int]]:
    """The `stats` table as {queue: (ready, delayed, running, failed)}; checks the header."""
    lines = out.splitlines()
    assert lines, "stats printed nothing"
    assert lines[0].split() == STATS_HEADER
    rows: dict[str, tuple[int, int, int, int]] = {}
    for line in lines[1:]:
        if not line:  # the data format line follows the table, after a blank line
            break
        queue, _waiting, ready, delayed, running, failed, _paused = line.split()
        rows[queue] = (int(ready), int(delayed), int(running), int(failed))
    return rows


async def stats(prefix: str, redis_url: str) -> dict[str, tuple[int, int, int, int]]:
    result = await inspect(prefix, redis_url, "stats")
    assert result.returncode == 0, result
    return parse_stats(result.stdout)


def json_lines(out: str) -> list[dict[str, Any]]:
    parsed = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    assert all(isinstance(item, dict) for item in parsed), out
    return parsed


async def runs_of(raw_redis: Redis, prefix: str) -> tuple[int, dict[str, int]]:
    """(total runs recorded, runs per job id)."""
    total = await raw_redis.get(count_key(prefix))
    per_job = await raw_redis.hgetall(runs_key(prefix))
    return (
        int(total or 0),
        {key.decode() if isinstance(key, bytes) else key: int(value) for key, value in per_job.items()},
    )


async def delete_keys(url: str, prefix: str, db: int) -> None:
    async with Redis.from_url(url, db=db) as client:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)


# -- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [CONSOLE_SCRIPT, PYTHON_M], ids=["console-script", "module"])
def test_help_exits_zero(command: tuple[str, ...], redis_url: str) -> None:
    result = run_sync([*command, "--help"], redis_url=redis_url)
    assert result.returncode == 0, result
    assert "usage: aiojobs-redis" in result.stdout
    for subcommand in ("work", "failed", "stats"):
        assert subcommand in result.stdout, result


# -- work ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_work_burst_runs_every_job_exactly_once(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    ids = {await Count().dispatch() for _ in range(200)}
    assert len(ids) == 200

    result = await work(prefix, redis_url, "--burst")

    assert result.returncode == 0, result
    total, per_job = await runs_of(raw_redis, prefix)
    assert total == 200, result
    assert set(per_job) == ids
    assert set(per_job.values()) == {1}, {k: v for k, v in per_job.items() if v != 1}
    assert await stats(prefix, redis_url) == {"default": (0, 0, 0, 0), OTHER_QUEUE: (0, 0, 0, 0)}


@pytest.mark.anyio
async def test_work_max_jobs_stops_after_that_many_and_leaves_the_rest(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    for _ in range(25):
        await Count().dispatch()

    # The console script, whose sys.path[0] is the venv's bin: --import must still find
    # jobapp in the current directory.
    result = await work(prefix, redis_url, "--max-jobs", "10", command=CONSOLE_SCRIPT)

    assert result.returncode == 0, result
    total, per_job = await runs_of(raw_redis, prefix)
    assert total == 10, result
    assert len(per_job) == 10
    assert await stats(prefix, redis_url) == {"default": (15, 0, 0, 0), OTHER_QUEUE: (0, 0, 0, 0)}


@pytest.mark.anyio
async def test_work_max_time_exits_on_time_while_idle(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    await Count().dispatch()

    result = await work(prefix, redis_url, "--max-time", "1")

    assert result.returncode == 0, result
    # Idle on the wake list (5 s blocks) after the one job: stop() must interrupt the wait.
    # Timed by the worker's own log, from serving to stopped: a process start on a busy
    # machine takes seconds of its own.
    assert 1.0 <= logged_between(result.stderr, "serving", "stopped") < 3.0, result
    assert (await runs_of(raw_redis, prefix))[0] == 1, result
    assert await stats(prefix, redis_url) == {"default": (0, 0, 0, 0), OTHER_QUEUE: (0, 0, 0, 0)}


@pytest.mark.anyio
async def test_work_fair_serves_the_queues_side_by_side(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    """One claim of 20: all from the first queue in priority order; 10 and 10 with --fair."""
    first = {await Count().dispatch() for _ in range(40)}
    second = {await OtherQueueFails().dispatch() for _ in range(40)}
    queues = ("--queue", "default", "--queue", OTHER_QUEUE, "--max-jobs", "20", "--concurrency", "20")

    result = await work(prefix, redis_url, *queues)

    assert result.returncode == 0, result
    _, per_job = await runs_of(raw_redis, prefix)
    assert (len(per_job.keys() & first), len(per_job.keys() & second)) == (20, 0), result
    assert await stats(prefix, redis_url) == {"default": (20, 0, 0, 0), OTHER_QUEUE: (40, 0, 0, 0)}

    result = await work(prefix, redis_url, *queues, "--fair")

    assert result.returncode == 0, result
    _, per_job = await runs_of(raw_redis, prefix)
    assert (len(per_job.keys() & first), len(per_job.keys() & second)) == (30, 10), result
    assert await stats(prefix, redis_url) == {"default": (10, 0, 0, 0), OTHER_QUEUE: (30, 0, 0, 10)}


@pytest.mark.parametrize(
    "module", ["no.such.module", "jobapp.no_such_submodule"], ids=["missing", "missing-submodule"]
)
def test_work_import_error_is_reported_quickly(module: str, prefix: str, redis_url: str) -> None:
    result = run_sync(
        [*PYTHON_M, "work", "--import", "jobapp", "--import", module, "--burst"],
        redis_url=redis_url,
        env={"REDIS_JOB_PREFIX": prefix},
    )
    assert result.returncode != 0, result
    assert result.seconds < 10, result
    assert f"cannot import {module!r}" in result.stderr, result
    assert "Traceback" not in result.stderr, result


@pytest.mark.anyio
async def test_work_rejects_an_invalid_queue_name(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    result = await work(prefix, redis_url, "--queue", "a:b", "--burst")

    assert result.returncode != 0, result
    assert "invalid queue name 'a:b'" in result.stderr, result
    assert "Traceback" not in result.stderr, result


@pytest.mark.anyio
async def test_a_starting_worker_waits_for_redis_then_runs_queued_jobs(prefix: str, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # AOF on: the queued jobs survive the restart
    server.start()
    try:
        async with RedisEngine(Settings(url=server.url, prefix=prefix)) as engine:
            with use_engine(engine):
                ids = {await Count().dispatch() for _ in range(20)}
        server.kill()
        worker = [*PYTHON_M, "work", "--import", "jobapp", "--burst", "--wait-for-redis", "30"]
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            env = cli_env(server.url, {"REDIS_JOB_PREFIX": prefix})
            proc = subprocess.Popen(worker, cwd=E2E_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # The server comes back only once the worker is up and retrying its first ping
            # (a busy machine can take seconds to start a Python process).
            await eventually(lambda: "waiting for Redis at start" in log.read_text(), 30, "the first retry")
            server.start()
            code = await to_thread.run_sync(partial(proc.wait, timeout=CLI_TIMEOUT))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code == 0, log.read_text()
        async with Redis.from_url(server.url) as client:
            total, per_job = await runs_of(client, prefix)
        assert total == 20, log.read_text()
        assert set(per_job) == ids
    finally:
        server.kill()


def test_a_starting_worker_gives_up_after_its_wait(prefix: str, redis_url: str) -> None:
    args = ["work", "--import", "jobapp", "--wait-for-redis", "1.5", "--url", "redis://127.0.0.1:1"]
    result = run_sync([*PYTHON_M, *args, "--prefix", prefix], redis_url=redis_url)
    assert result.returncode == 1, result
    assert 1.0 < result.seconds < 10, result
    assert "waiting for Redis at start" in result.stderr, result  # it did retry
    assert (
        result.stderr.rstrip().splitlines()[-1].startswith("aiojobs-redis: error: connect: Redis unavailable")
    )


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            [
                "work",
                "--import",
                "jobapp",
                "--burst",
                "--wait-for-redis",
                "0",
                "--url",
                "redis://127.0.0.1:1",
            ],
            {},
            "Redis unavailable",
        ),
        (["stats", "--url", "redis://127.0.0.1:1"], {}, "Redis unavailable"),
        (["stats"], {"REDIS_JOB_DB": "seven"}, "REDIS_JOB_DB must be an integer, not 'seven'"),
        (["stats", "--queue", "a:b"], {}, "invalid queue name 'a:b'"),
        (["failed", "retry", "bad id!"], {}, "invalid job id 'bad id!'"),
    ],
    ids=["work-no-redis", "stats-no-redis", "bad-db", "stats-bad-queue", "retry-bad-id"],
)
def test_errors_are_one_clear_line(
    args: list[str], env: dict[str, str], message: str, prefix: str, redis_url: str
) -> None:
    result = run_sync([*PYTHON_M, *args, "--prefix", prefix], redis_url=redis_url, env=env)
    assert result.returncode == 1, result
    assert result.seconds < 10, result
    assert result.stderr.startswith("aiojobs-redis: error: "), result
    assert message in result.stderr, result
    assert "Traceback" not in result.stderr, result


@pytest.mark.anyio
async def test_failed_jobs_list_retry_forget_flush_and_stats(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    failing = await AlwaysFails().dispatch()
    others = {await OtherQueueFails().dispatch() for _ in range(2)}
    queues = ("--queue", "default", "--queue", OTHER_QUEUE)

    result = await work(prefix, redis_url, "--burst", *queues)

    assert result.returncode == 0, result
    total, per_job = await runs_of(raw_redis, prefix)
    assert per_job == {failing: 3, **dict.fromkeys(others, 1)}, result
    assert total == 5

    # stats: a header and one row per queue; --json one object per queue.
    assert await stats(prefix, redis_url) == {"default": (0, 0, 0, 1), OTHER_QUEUE: (0, 0, 0, 2)}
    result = await inspect(prefix, redis_url, "stats", "--json")
    assert result.returncode == 0, result
    assert sorted(json_lines(result.stdout), key=lambda row: str(row["queue"])) == [
        {
            "queue": "default",
            "ready": 0,
            "delayed": 0,
            "running": 0,
            "failed": 1,
            "failed_dropped": 0,
            "paused": False,
            "waiting": 0,
            "format_version": 2,
        },
        {
            "queue": OTHER_QUEUE,
            "ready": 0,
            "delayed": 0,
            "running": 0,
            "failed": 2,
            "failed_dropped": 0,
            "paused": False,
            "waiting": 0,
            "format_version": 2,
        },
    ]

    # failed list: the table, then JSON lines.
    result = await inspect(prefix, redis_url, "failed", "list")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "queue", "job", "attempts"], result
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert set(by_id) == {failing, *others}, result
    row = by_id[failing]
    assert row.split()[1:4] == ["default", "jobapp.AlwaysFails", "3/3"], row
    assert f"[error] builtins.ValueError: {FAIL_MESSAGE}" in row
    for job_id in others:
        assert by_id[job_id].split()[1:4] == [OTHER_QUEUE, "jobapp.OtherQueueFails", "1/1"]
        assert f"builtins.RuntimeError: {FAIL_MESSAGE}" in by_id[job_id]

    result = await inspect(prefix, redis_url, "failed", "list", "--json")
    assert result.returncode == 0, result
    records = {str(item["id"]): item for item in json_lines(result.stdout)}
    assert set(records) == {failing, *others}
    record = records[failing]
    assert record["queue"] == "default"
    assert record["name"] == "jobapp.AlwaysFails"
    assert record["state"] == "failed"
    assert (record["attempts"], record["max_attempts"], record["runs"]) == (3, 3, 3)
    assert record["error"]["reason"] == "error"
    assert record["error"]["type"] == "builtins.ValueError"
    assert record["error"]["message"] == FAIL_MESSAGE
    assert FAIL_MESSAGE in record["error"]["traceback"]

    result = await inspect(prefix, redis_url, "failed", "list", "--json", "--queue", OTHER_QUEUE)
    assert result.returncode == 0, result
    assert {str(item["id"]) for item in json_lines(result.stdout)} == others

    # failed retry <id>: requeued with fresh attempts; a second retry finds nothing to do.
    result = await inspect(prefix, redis_url, "failed", "retry", failing)
    assert result.returncode == 0, result
    assert "requeued 1 job(s)" in result.stdout
    assert (await stats(prefix, redis_url))["default"] == (1, 0, 0, 0)
    result = await inspect(prefix, redis_url, "failed", "retry", failing)
    assert result.returncode == 1, result
    assert "requeued 0 job(s)" in result.stdout

    # failed retry --all --queue Q touches only Q.
    result = await inspect(prefix, redis_url, "failed", "retry", "--all", "--queue", OTHER_QUEUE)
    assert result.returncode == 0, result
    assert "requeued 2 job(s)" in result.stdout
    assert await stats(prefix, redis_url) == {"default": (1, 0, 0, 0), OTHER_QUEUE: (2, 0, 0, 0)}

    # The requeued jobs run again with all their attempts, and fail again.
    result = await work(prefix, redis_url, "--burst", *queues)
    assert result.returncode == 0, result
    assert (await runs_of(raw_redis, prefix))[1] == {failing: 6, **dict.fromkeys(others, 2)}
    assert await stats(prefix, redis_url) == {"default": (0, 0, 0, 1), OTHER_QUEUE: (0, 0, 0, 2)}

    # failed forget <id> deletes the record; an id that is not failed is an error.
    result = await inspect(prefix, redis_url, "failed", "forget", failing)
    assert result.returncode == 0, result
    assert "forgot 1 job(s)" in result.stdout
    assert await raw_redis.exists(f"{prefix}{{default}}:j:{failing}") == 0
    result = await inspect(prefix, redis_url, "failed", "forget", failing)
    assert result.returncode == 1, result
    assert "forgot 0 job(s)" in result.stdout

    # failed flush --queue Q empties Q's failed set and deletes the records.
    result = await inspect(prefix, redis_url, "failed", "flush", "--queue", OTHER_QUEUE, "--yes")
    assert result.returncode == 0, result
    assert "flushed 2 job(s)" in result.stdout
    for job_id in others:
        assert await raw_redis.exists(f"{prefix}{{{OTHER_QUEUE}}}:j:{job_id}") == 0
    assert await stats(prefix, redis_url) == {"default": (0, 0, 0, 0), OTHER_QUEUE: (0, 0, 0, 0)}

    result = await inspect(prefix, redis_url, "failed", "list")
    assert result.returncode == 0, result
    assert result.stdout.strip() == "no failed jobs"


@pytest.mark.anyio
async def test_permanent_failure_fails_at_once(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    job_id = await GivesUp().dispatch()

    result = await work(prefix, redis_url, "--burst")

    assert result.returncode == 0, result
    assert await runs_of(raw_redis, prefix) == (1, {job_id: 1}), result
    assert await stats(prefix, redis_url) == {"default": (0, 0, 0, 1), OTHER_QUEUE: (0, 0, 0, 0)}
    result = await inspect(prefix, redis_url, "failed", "list", "--json")
    assert result.returncode == 0, result
    [record] = json_lines(result.stdout)
    assert record["id"] == job_id
    assert (record["attempts"], record["max_attempts"]) == (1, 5)
    assert record["error"]["reason"] == "permanent"
    assert record["error"]["type"] == "aiojobs_redis.errors.PermanentFailure"
    assert record["error"]["message"] == PERMANENT_MESSAGE


@pytest.mark.anyio
async def test_unknown_job_name_is_failed_without_retries_when_there_is_no_grace(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    before = {await Count().dispatch() for _ in range(3)}
    ghost = await Ghost().dispatch()
    after = {await Count().dispatch() for _ in range(3)}

    # (With a grace period, the default, it is put back instead: test_job_names_cli.py.)
    result = await work(prefix, redis_url, "--burst", "--concurrency", "1", "--unknown-job-grace", "0")

    assert result.returncode == 0, result
    assert await runs_of(raw_redis, prefix) == (6, dict.fromkeys(before | after, 1)), result
    assert ghost in result.stderr, result  # the worker logs what it could not run
    assert await stats(prefix, redis_url) == {"default": (0, 0, 0, 1), OTHER_QUEUE: (0, 0, 0, 0)}
    result = await inspect(prefix, redis_url, "failed", "list", "--json")
    assert result.returncode == 0, result
    [record] = json_lines(result.stdout)
    assert record["id"] == ghost
    assert record["name"] == "jobapp.Ghost"
    assert (record["attempts"], record["max_attempts"], record["runs"]) == (0, 3, 1)
    assert record["error"]["reason"] == "unknown_job"
    assert record["error"]["type"] == "aiojobs_redis.errors.UnknownJob"
    assert "jobapp.Ghost" in record["error"]["message"]


# -- settings from the environment -----------------------------------------------------------


@pytest.mark.anyio
async def test_stats_reads_the_database_from_redis_job_db(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    try:
        async with RedisEngine(Settings(url=redis_url, prefix=prefix, db=7)) as engine7:
            with use_engine(engine7):
                await Count().dispatch()
                await Count().dispatch(delay="+1 hour")

        seventh = await run(
            [*PYTHON_M, "stats", "--prefix", prefix],
            redis_url=redis_url,
            env={"REDIS_JOB_DB": "7"},
        )
        assert seventh.returncode == 0, seventh
        assert parse_stats(seventh.stdout) == {"default": (1, 1, 0, 0)}

        # The same command on database 0 (the default) sees nothing under this prefix.
        assert await stats(prefix, redis_url) == {}

        # --db wins over REDIS_JOB_DB.
        flagged = await run(
            [*PYTHON_M, "stats", "--json", "--prefix", prefix, "--db", "7"],
            redis_url=redis_url,
            env={"REDIS_JOB_DB": "0"},
        )
        assert flagged.returncode == 0, flagged
        assert json_lines(flagged.stdout) == [
            {
                "queue": "default",
                "ready": 1,
                "delayed": 1,
                "running": 0,
                "failed": 0,
                "failed_dropped": 0,
                "paused": False,
                "waiting": 0,
                "format_version": 2,
            }
        ]
    finally:
        await delete_keys(redis_url, prefix, db=7)
