"""Job names end to end: a job defined in a script run as __main__ is run by a worker that
imports the script as a module; a job no imported class knows is put back, not failed; two
imported classes claiming one name stop the worker before it starts.

Real `python` and `aiojobs-redis` subprocesses on the real Redis, in a scratch directory as a
user's project would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from anyio import to_thread

from aiojobs_redis import Job, RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

TIMEOUT = 60.0
PACKAGE_ENV = ("JOB_ENGINE", "REDIS_URL", "REDIS_JOB_PREFIX", "REDIS_JOB_DB")

MAINJOB = '''
"""A script that defines its job and dispatches it: `python mainjob.py`."""
import asyncio
from pathlib import Path

import orjson

from aiojobs_redis import Job, connect


class SendEmail(Job):
    queue = "emails"

    async def handle(self) -> None:
        with open(Path(__file__).with_name("sent.jsonl"), "ab") as sent:
            sent.write(orjson.dumps(self.payload) + b"\\n")


async def main() -> None:
    async with connect():
        print(await SendEmail.dispatch({"to": "ada@example.com"}))
        print(await SendEmail().dispatch({"to": "bob@example.com"}, delay="now"))


if __name__ == "__main__":
    asyncio.run(main())
'''


def run(args: list[str], cwd: Path, redis_url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PACKAGE_ENV}
    env.update(REDIS_URL=redis_url, REDIS_JOB_PREFIX=prefix)
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


async def work(cwd: Path, redis_url: str, prefix: str, *options: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "aiojobs_redis", "work", "--burst", *options]
    return await to_thread.run_sync(run, args, cwd, redis_url, prefix)


async def test_a_job_dispatched_by_a_script_runs_in_a_worker_that_imports_it(
    engine: RedisEngine, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    (tmp_path / "mainjob.py").write_text(MAINJOB)
    dispatched = await to_thread.run_sync(run, [sys.executable, "mainjob.py"], tmp_path, redis_url, prefix)
    assert dispatched.returncode == 0, dispatched.stderr
    assert len(dispatched.stdout.split()) == 2, dispatched.stdout

    result = await work(tmp_path, redis_url, prefix, "--import", "mainjob", "--queue", "emails")

    assert result.returncode == 0, result.stderr
    assert "cannot run" not in result.stderr, result.stderr
    sent = [orjson.loads(line) for line in (tmp_path / "sent.jsonl").read_bytes().splitlines()]
    assert sent == [{"to": "ada@example.com"}, {"to": "bob@example.com"}]
    [emails] = await engine.stats("emails")
    assert (emails.ready, emails.delayed, emails.running, emails.failed) == (0, 0, 0, 0)


class Stranger(Job):
    """Defined only in the test process: the worker has no class of this name."""

    queue = "strangers"
    attempts = 3

    async def handle(self) -> None:  # pragma: no cover - the worker cannot run it
        raise AssertionError("a Stranger job must never run")


async def test_an_unknown_job_is_put_back_unless_the_grace_is_zero(
    engine: RedisEngine, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    (tmp_path / "nojobs.py").write_text("")
    job_id = await Stranger({"n": 1}).dispatch()

    result = await work(tmp_path, redis_url, prefix, "--import", "nojobs", "--queue", "strangers")

    assert result.returncode == 0, result.stderr
    assert "no Job class is registered as 'Stranger'" in result.stderr, result.stderr
    assert "Put back to run again in 5 s, using no attempt" in result.stderr, result.stderr
    info = await engine.get_job("strangers", job_id)
    assert info is not None and info.error is not None
    assert (info.state, info.attempts, info.error["reason"]) == ("delayed", 0, "unknown_job")

    await engine.promote(["strangers"])  # not due for 5 s: still delayed
    other_id = await Stranger({"n": 2}).dispatch()
    result = await work(
        tmp_path, redis_url, prefix, "--import", "nojobs", "--queue", "strangers", "--unknown-job-grace", "0"
    )
    assert result.returncode == 0, result.stderr
    assert "cannot run (unknown_job)" in result.stderr, result.stderr
    info = await engine.get_job("strangers", other_id)
    assert info is not None and (info.state, info.attempts) == ("failed", 0)


async def test_two_imported_classes_claiming_one_name_stop_the_worker_with_the_fix(
    engine: RedisEngine, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    source = textwrap.dedent("""
        from aiojobs_redis import Job

        class Notify(Job):
            name = "Notify"

            async def handle(self) -> None:
                return None
    """)
    for package in ("billing", "shipping"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "jobs.py").write_text(source)

    result = await work(tmp_path, redis_url, prefix, "--import", "billing.jobs", "--import", "shipping.jobs")

    assert result.returncode == 1, result
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("aiojobs-redis: error: job name 'Notify' is claimed by two classes"), error
    assert "billing.jobs.Notify" in error and "shipping.jobs.Notify" in error, error
    assert str((tmp_path / "billing" / "jobs.py").resolve()) in error, error
    assert 'name = "..."' in error, error
