"""`aiojobs-redis pause` / `resume` as a user runs them, and the paused column of `stats`:
real subprocesses on the real Redis."""

from __future__ import annotations

import pytest
from test_cli import inspect, json_lines

from aiojobs_redis import Job, RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUEUE, OTHER = "cli-pause", "cli-pause-other"


class Paused(Job):
    queue = QUEUE
    name = "cli.PausedJob"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


class NotPaused(Paused):
    queue = OTHER
    name = "cli.NotPausedJob"


def stats_rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    assert lines[0].split()[-1] == "paused", out
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if line.strip() and "format" not in line}


async def test_pause_and_resume_queues_with_stats_showing_it(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    await Paused().dispatch()
    await NotPaused().dispatch()

    result = await inspect(prefix, redis_url, "pause", QUEUE)
    assert (result.returncode, result.stdout) == (0, f"paused {QUEUE}\n"), result
    assert await engine.paused([QUEUE, OTHER]) == [True, False]
    result = await inspect(prefix, redis_url, "pause", QUEUE)
    assert (result.returncode, result.stdout) == (0, f"{QUEUE} was paused already\n"), result

    result = await inspect(prefix, redis_url, "stats")
    rows = stats_rows(result.stdout)
    assert rows[QUEUE] == ["0", "1", "0", "0", "0", "yes"], result  # waiting, ready, ..., paused
    assert rows[OTHER] == ["0", "1", "0", "0", "0", "no"], result
    result = await inspect(prefix, redis_url, "stats", "--json")
    assert {row["queue"]: row["paused"] for row in json_lines(result.stdout)} == {QUEUE: True, OTHER: False}

    result = await inspect(prefix, redis_url, "resume", QUEUE, OTHER)
    assert (result.returncode, result.stdout) == (0, f"resumed {QUEUE}\n{OTHER} was not paused\n"), result
    assert await engine.paused([QUEUE, OTHER]) == [False, False]


async def test_unknown_and_invalid_queue_names_are_refused_before_anything_changes(
    engine: RedisEngine, prefix: str, redis_url: str
) -> None:
    await Paused().dispatch()
    result = await inspect(prefix, redis_url, "pause", QUEUE, "cli-pause-typo")
    assert result.returncode == 1, result
    assert result.stderr.startswith("aiojobs-redis: error: unknown queue 'cli-pause-typo'"), result
    assert "--new" in result.stderr, result
    assert await engine.paused([QUEUE]) == [False], "nothing paused when one name is refused"

    result = await inspect(prefix, redis_url, "pause", QUEUE, "no:colons")
    assert result.returncode == 1, result
    assert "aiojobs-redis: error: invalid queue name 'no:colons'" in result.stderr, result
    assert await engine.paused([QUEUE]) == [False]

    result = await inspect(prefix, redis_url, "resume", "cli-pause-typo")
    assert result.returncode == 1 and "unknown queue 'cli-pause-typo'" in result.stderr, result
    assert "--new" not in result.stderr, result

    # --new pauses a queue before its first job: its jobs then wait from the start.
    result = await inspect(prefix, redis_url, "pause", "--new", "cli-pause-later")
    assert (result.returncode, result.stdout) == (0, "paused cli-pause-later\n"), result
    assert await engine.paused(["cli-pause-later"]) == [True]
    assert "cli-pause-later" in await engine.known_queues()

    result = await inspect(prefix, redis_url, "pause")
    assert result.returncode == 2 and "QUEUE" in result.stderr, result
