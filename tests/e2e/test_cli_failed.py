"""The `failed` commands as a user runs them: real `aiojobs-redis` subprocesses on the real Redis.

Failed jobs are made through the engine's own calls (dispatch, claim, fail), not a worker,
so that each test is quick and knows exactly what is stored.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import orjson
import pytest
from support.engine_calls import fail_new_jobs
from test_cli import PYTHON_M, cli_env, inspect, json_lines, run_sync

from aiojobs_redis import Job, RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUEUE = "cli-failed"
OTHER = "cli-failed-other"


class Charge(Job):
    queue = QUEUE
    name = "cli.Charge"
    attempts = 3

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


class Ship(Job):
    queue = OTHER
    name = "cli.Ship"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


class Refund(Job):
    queue = QUEUE
    name = "cli.Refund"
    unique = True
    unique_key = "order"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


async def fail_jobs(engine: RedisEngine, job: type[Job], count: int, message: str) -> list[str]:
    def error(job_id: str) -> dict[str, Any]:
        return {
            "reason": "error",
            "type": "builtins.RuntimeError",
            "message": f"{message} for {job_id}",
            "traceback": f'Traceback (most recent call last):\n  File "app.py", line 9\n{message}',
        }

    payloads = [{"card": f"4111-{i}", "html": "<script>x</script>"} for i in range(count)]
    return await fail_new_jobs(engine, job, payloads, error)


def rows(out: str) -> list[str]:
    """The job ids of a `failed list` table (the lines after the header, before any notice)."""
    lines = out.splitlines()
    return [line.split()[0] for line in lines[1:] if line and not line.startswith("showing")]


async def test_failed_list_says_when_it_shows_only_part(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    charges = await fail_jobs(engine, Charge, 100, "card declined")
    ships = await fail_jobs(engine, Ship, 24, "no courier")

    result = await inspect(prefix, redis_url, "failed", "list")
    assert result.returncode == 0, result
    assert len(rows(result.stdout)) == 100, result
    assert result.stdout.splitlines()[-1] == "showing 1-100 of 124 failed jobs; --offset 100 for more", result

    result = await inspect(prefix, redis_url, "failed", "list", "--offset", "100", "--limit", "50")
    assert result.returncode == 0, result
    assert len(rows(result.stdout)) == 24 and "showing 101-124 of 124 failed jobs" in result.stdout, result

    result = await inspect(prefix, redis_url, "failed", "list", "--queue", OTHER)
    assert sorted(rows(result.stdout)) == sorted(ships) and "showing" not in result.stdout, result

    result = await inspect(prefix, redis_url, "failed", "list", "--name", "ship", "--limit", "5")
    assert len(rows(result.stdout)) == 5, result
    assert "showing 1-5 of 24 matching (124 failed in all); --offset 5 for more" in result.stdout, result

    result = await inspect(
        prefix, redis_url, "failed", "list", "--grep", "DECLINED", "--json", "--limit", "3"
    )
    assert result.returncode == 0, result
    listed = json_lines(result.stdout)  # the notice goes to stderr: stdout stays JSON lines
    assert len(listed) == 3 and {item["id"] for item in listed} <= set(charges), result
    assert "showing 1-3 of 100 matching" in result.stderr, result


async def test_failed_show_prints_the_record_error_and_traceback(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    [job_id] = await fail_jobs(engine, Charge, 1, "card declined")
    now_ms = await engine.redis_time_ms(max_age_ms=0)
    event = {
        "kind": "retried",
        "at": now_ms,
        "id": job_id,
        "job": "cli.Charge",
        "attempt": 1,
        "error": "E: first",
    }
    await engine.record_events({QUEUE: ([], [orjson.dumps(event)])}, events_max=100)

    result = await inspect(prefix, redis_url, "failed", "show", job_id)

    assert result.returncode == 0, result
    out = result.stdout
    for expected in (
        f"job        {job_id}",
        "name       cli.Charge",
        f"queue      {QUEUE}",
        "state      failed",
        "attempts   1 of 3 used",
        "dispatched 20",
        "started    20",
        "ended      20",
        "attempt 1  retried: E: first",
        f"[error] builtins.RuntimeError: card declined for {job_id}",
        'File "app.py", line 9',
    ):
        assert expected in out, result
    assert "4111" not in out and "payload" not in out, result

    result = await inspect(prefix, redis_url, "failed", "show", job_id, "--payload")
    assert '"card": "4111-0"' in result.stdout, result

    result = await inspect(prefix, redis_url, "failed", "show", job_id, "--json")
    record = orjson.loads(result.stdout)
    assert (record["name"], record["queue"], record["state"]) == ("cli.Charge", QUEUE, "failed")
    assert "payload" not in record and record["events"][0]["error"] == "E: first"

    result = await inspect(prefix, redis_url, "failed", "show", "nosuchjob")
    assert (result.returncode, result.stderr.strip()) == (1, "no job with id nosuchjob"), result


async def test_failed_retry_and_forget_name_unknown_ids(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    [job_id] = await fail_jobs(engine, Charge, 1, "card declined")

    result = await inspect(prefix, redis_url, "failed", "retry", job_id, "nosuchjob")
    assert result.returncode == 1, result
    assert "requeued 1 job(s)" in result.stdout and "no failed job with id nosuchjob" in result.stderr, result
    assert job_id not in result.stderr, result

    result = await inspect(prefix, redis_url, "failed", "forget", "gone1")
    assert (result.returncode, result.stderr.strip()) == (1, "no failed job with id gone1"), result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give job ids, or --all to retry every failed job"),
        (["j1", "--all"], "give job ids or --all, not both"),
    ],
    ids=["neither", "both"],
)
def test_failed_retry_explains_what_it_needs(
    args: list[str], message: str, prefix: str, redis_url: str
) -> None:
    result = run_sync([*PYTHON_M, "failed", "retry", *args, "--prefix", prefix], redis_url=redis_url)
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: aiojobs-redis failed retry"), result
    assert message in result.stderr, result


def flush(prefix: str, redis_url: str, *args: str, **io: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYTHON_M, "failed", "flush", "--prefix", prefix, *args],
        env=cli_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **io,
    )


async def test_failed_flush_asks_on_a_terminal_and_refuses_without_one(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    await fail_jobs(engine, Charge, 2, "card declined")

    refused = flush(prefix, redis_url, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2, refused
    assert "stdin is not a terminal" in refused.stderr and "--yes" in refused.stderr, refused

    for answer, deleted in (("n\n", False), ("y\n", True)):
        leader, follower = os.openpty()
        try:
            os.write(leader, answer.encode())
            asked = flush(prefix, redis_url, stdin=follower)
        finally:
            os.close(follower)
            os.close(leader)
        assert asked.returncode == (0 if deleted else 1), asked
        assert ("flushed 2 job(s)" in asked.stdout) == deleted, asked
        assert ("nothing deleted" in asked.stdout) != deleted, asked
        assert (sum(s.failed for s in await engine.stats()) == 0) == deleted

    await fail_jobs(engine, Charge, 1, "again")
    confirmed = flush(prefix, redis_url, "--yes", stdin=subprocess.DEVNULL)
    assert (confirmed.returncode, confirmed.stdout.strip()) == (0, "flushed 1 job(s)"), confirmed


async def test_a_reader_that_leaves_early_gets_no_traceback(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    """`failed list | head -1`: far more output than a pipe holds, and the reader goes away."""
    await fail_jobs(engine, Charge, 400, "card declined " + "x" * 400)
    command = [*PYTHON_M, "failed", "list", "--json", "--limit", "400", "--prefix", prefix]
    listing = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "REDIS_URL": redis_url}
    )
    assert listing.stdout is not None and listing.stderr is not None
    first = listing.stdout.readline()
    listing.stdout.close()
    with listing.stderr:
        stderr = listing.stderr.read().decode()
    assert listing.wait(timeout=60) == 141, stderr
    assert orjson.loads(first)["name"] == "cli.Charge"
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


async def test_failed_retry_skips_a_unique_job_whose_key_is_live(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    [failed] = await fail_new_jobs(engine, Refund, [{"order": 7}], lambda _: {"reason": "error"})
    live = await Refund.dispatch({"order": 7})
    assert live != failed

    result = await inspect(prefix, redis_url, "failed", "retry", failed)
    assert result.returncode == 1, result
    assert "requeued 0 job(s)" in result.stdout, result
    assert f"{failed} skipped: a job with the same unique key is live ({live})" in result.stderr, result
    report = await engine.failed_retry_report([failed])
    assert (report.requeued, report.held) == (0, {failed: live})
