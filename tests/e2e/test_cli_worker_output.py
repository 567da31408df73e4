"""What `aiojobs-redis work` serves and says: the imported classes' queues by default, a line
per job done, no redis-py noise, the delayed jobs a burst leaves, and the exit status and last
word of a worker stopped at once by a second signal. Real subprocesses on the real Redis."""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from jobapp import OTHER_QUEUE, Count, OtherQueueFails
from redis.asyncio import Redis
from support.wait import eventually
from test_cli import PYTHON_M, cli_env, run, runs_of, work

from aiojobs_redis import Job, RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

SLOW_QUEUE = "e2e-slow"
SLOW_MODULE = f'''
import anyio
from aiojobs_redis import Job

class Slow(Job):
    name = "slowjobs.Slow"
    queue = "{SLOW_QUEUE}"

    async def handle(self) -> None:
        await anyio.sleep(600)
'''


class Slow(Job):
    """The test's side of slowjobs.Slow (written to a file the worker imports)."""

    name = "slowjobs.Slow"
    queue = SLOW_QUEUE

    async def handle(self) -> None:  # pragma: no cover - only the worker runs it
        raise AssertionError("runs in the worker")


async def test_without_queue_it_serves_the_imported_classes_queues_and_lists_them(
    engine: RedisEngine, raw_redis: Redis, prefix: str, redis_url: str
) -> None:
    ids = {await Count().dispatch(), await OtherQueueFails().dispatch()}

    result = await work(prefix, redis_url, "--burst")

    assert result.returncode == 0, result
    assert set((await runs_of(raw_redis, prefix))[1]) == ids, result  # both queues were served
    assert f"serving default,{OTHER_QUEUE}," in result.stderr, result
    assert "job jobapp.Count (jobapp.Count), queue default" in result.stderr, result
    other = f"job jobapp.OtherQueueFails (jobapp.OtherQueueFails), queue {OTHER_QUEUE}"
    assert other in result.stderr, result
    assert "no Job classes imported" not in result.stderr, result


async def test_with_nothing_imported_it_warns_and_serves_default(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    result = await run([*PYTHON_M, "work", "--burst"], redis_url=redis_url, env={"REDIS_JOB_PREFIX": prefix})

    assert result.returncode == 0, result
    assert "WARNING aiojobs_redis.cli: no Job classes imported; pass --import MODULE" in result.stderr
    assert "serving default," in result.stderr, result


async def test_each_job_done_is_logged_unless_quiet(engine: RedisEngine, prefix: str, redis_url: str) -> None:
    job_id = await Count().dispatch()
    result = await work(prefix, redis_url, "--burst", "--queue", "default")

    assert result.returncode == 0, result
    (done,) = [line for line in result.stderr.splitlines() if f"job {job_id} jobapp.Count done in" in line]
    assert " INFO aiojobs_redis.worker.jobs: " in done and done.endswith(" ms (attempt 1/1)"), done
    assert (
        "stopped after " in result.stderr and ": 1 claimed, 1 succeeded, 0 failed for good" in result.stderr
    )

    job_id = await Count().dispatch()
    result = await work(prefix, redis_url, "--burst", "--queue", "default", "--quiet-jobs")

    assert result.returncode == 0, result
    assert job_id not in result.stderr and " done in " not in result.stderr, result
    assert ": 1 claimed, 1 succeeded" in result.stderr, result


async def test_a_burst_end_names_the_delayed_jobs_it_leaves_and_redis_py_stays_quiet(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    await Count().dispatch(delay="+1 hour")
    await Count().dispatch(delay="+2 hours")

    result = await work(prefix, redis_url, "--burst", "--log-level", "DEBUG")

    assert result.returncode == 0, result
    # (No job runs here: a handler's own Redis client would have its own say.)
    assert "MAINT_NOTIFICATIONS" not in result.stderr and "maintenance" not in result.stderr, result
    (line,) = [line for line in result.stderr.splitlines() if "no ready jobs left (burst)" in line]
    assert "; 2 delayed jobs remain in default, next due in 3" in line, line  # 3599.x s
    assert [(q.queue, q.delayed) for q in await engine.stats("default")] == [("default", 2)]


async def test_delayed_summary_counts_and_times_each_queue(engine: RedisEngine) -> None:
    await Count().dispatch(delay="+10 seconds")
    await Count().dispatch(delay="+1 hour")
    await Count().dispatch()

    [(count, due), (none, never)] = await engine.delayed_summary(["default", "nothing-here"])

    assert count == 2 and 5_000 < due <= 10_000, due
    assert (none, never) == (0, -1)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_second_signal_stops_at_once_with_the_shell_status_and_says_what_was_abandoned(
    signum: signal.Signals, status: int, engine: RedisEngine, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "slowjobs.py").write_text(textwrap.dedent(SLOW_MODULE))
    await engine.dispatch_many([Slow({"n": n}) for n in range(3)])
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*PYTHON_M, "work", "--import", "slowjobs", "--concurrency", "3", "--lease", "7"],
            cwd=tmp_path,
            env=cli_env(redis_url, {"REDIS_JOB_PREFIX": prefix}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        async def running() -> bool:
            return [s.running for s in await engine.stats(SLOW_QUEUE)] == [3]

        def exited() -> str | None:
            return None if proc.poll() is None else f"the worker exited: {log_path.read_text()}"

        await eventually(running, timeout=30, what="3 running jobs", give_up=exited)
        proc.send_signal(signum)
        await eventually(lambda: "draining" in log_path.read_text(), what="a drain", give_up=exited)
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == status, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = log_path.read_text().splitlines()
    assert f"received {signum.name} again: stopping now" in "\n".join(lines)
    last = lines[-1]
    assert f"stopped at once by a second {signum.name}: 3 running job(s) cut off (counted lost)" in last, last
    assert "once their lease lapses, within 7 s" in last and "no attempt is used" in last, last
    assert [s.running for s in await engine.stats(SLOW_QUEUE)] == [3]  # left for a reaper
