"""Data written by 0.1.0 runs on this release: every job ends exactly once.

v010_fixture.json holds the keys 0.1.0 wrote for one queue (see make_v010_fixture.py, which
made it from the v0.1.0 tag): two jobs waiting inline, one delayed, one waiting for its
retry, one failed and one running whose worker died. Its times lie in the past, so every
delayed job is due and the running job's lease has lapsed. Loaded under this test's own
prefix, it is served by this release's engine and a burst worker, a minute after 0.1 wrote
it by the engine's fake clock (by Redis's own clock the failed job would be past its
retention, and trimmed).
"""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from support.clock import FakeClock

from aiojobs_redis import Job, RedisEngine, Worker
from aiojobs_redis.keys import FORMAT_VERSION, QueueKeys
from aiojobs_redis.records import ClaimedJob

FIXTURE = orjson.loads((Path(__file__).parent / "v010_fixture.json").read_bytes())
QUEUE: str = FIXTURE["queue"]
JOBS: dict[str, str] = FIXTURE["jobs"]  # label -> job id
runs: list[tuple[str, int]] = []  # (label, attempt) of every run


class Mark(Job):
    name = "upgrade.Mark"  # as 0.1.0 stored it
    queue = QUEUE
    attempts = 3

    async def handle(self) -> None:
        runs.append((self.payload["label"], self.attempt))


def _value(item: Any) -> Any:
    """A value of the dump: text, or {"base64": ...} for bytes that are not UTF-8."""
    if isinstance(item, dict) and set(item) == {"base64"}:
        return base64.b64decode(item["base64"])
    return item


async def load(raw: Redis, prefix: str) -> None:
    """Every key of the fixture, under `prefix` instead of the one it was written under."""
    for name, stored in FIXTURE["keys"].items():
        key = prefix + name.removeprefix("PREFIX")
        kind, value = stored["type"], stored["value"]
        if kind == "string":
            await raw.set(key, _value(value))
        elif kind == "list":
            await raw.rpush(key, *map(_value, value))
        elif kind == "set":
            await raw.sadd(key, *map(_value, value))
        elif kind == "zset":
            await raw.zadd(key, {_value(member): score for member, score in value})
        elif kind == "hash":
            await raw.hset(key, mapping={_value(f): _value(v) for f, v in value.items()})
        else:
            raise AssertionError(f"{kind} at {name}")
        if stored["ttl_ms"] > 0:
            await raw.pexpire(key, stored["ttl_ms"])


def test_the_fixture_is_0_1_data() -> None:
    """No version anywhere; each state 0.1 knows is there once."""
    keys = FIXTURE["keys"]
    assert "PREFIXformat" not in keys
    entries = keys[f"PREFIX{{{QUEUE}}}:queue"]["value"]
    assert [entry.split(" ")[:3] for entry in entries] == [
        [f"!{JOBS['inline_1']}", "upgrade.Mark", "3"],
        [f"!{JOBS['inline_2']}", "upgrade.Mark", "3"],
    ]
    states = {
        label: keys[f"PREFIX{{{QUEUE}}}:j:{job_id}"]["value"]["s"]
        for label, job_id in JOBS.items()
        if f"PREFIX{{{QUEUE}}}:j:{job_id}" in keys
    }
    assert states == {
        "running": "running",
        "retry_waiting": "delayed",
        "failed": "failed",
        "delayed": "delayed",
    }
    assert not any("v" in item["value"] for item in keys.values() if item["type"] == "hash")


@pytest.mark.anyio
async def test_every_job_written_by_0_1_ends_exactly_once(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis, prefix: str
) -> None:
    engine = clocked_engine
    clock.now_ms = FIXTURE["clock_ms"] + 60_000  # every due time and lease deadline has passed
    await load(raw_redis, prefix)
    keys = QueueKeys.of(prefix, QUEUE)
    runs.clear()

    # The reaper takes back the job whose 0.1 worker died; its old token is fenced off.
    reaped = await engine.reap(QUEUE, max_stalls=3)
    assert (reaped.requeued, reaped.failed) == ([JOBS["running"]], [])
    dead = ClaimedJob(QUEUE, JOBS["running"], "v010-worker:1", Mark.name.encode(), b"{}", 0, 3, 1)
    assert await engine.fail(dead, {"reason": "late"}) is False

    with anyio.fail_after(30):
        await Worker(engine, [QUEUE], burst=True).run()
    assert Counter(label for label, _ in runs) == Counter(
        ["inline_1", "inline_2", "delayed", "retry_waiting", "running"]
    )
    assert dict(runs)["retry_waiting"] == 2, "its first attempt was used under 0.1"
    failed = await engine.get_job(QUEUE, JOBS["failed"])
    assert failed is not None and failed.state == "failed" and failed.format_version == 1
    assert await engine.format_version() == FORMAT_VERSION

    # `failed retry` runs the failed one, once.
    assert await engine.failed_retry([JOBS["failed"]]) == 1
    with anyio.fail_after(30):
        await Worker(engine, [QUEUE], burst=True).run()
    assert Counter(label for label, _ in runs) == Counter(
        ["inline_1", "inline_2", "delayed", "retry_waiting", "running", "failed"]
    )
    [stats] = await engine.stats(QUEUE)
    assert (stats.ready, stats.delayed, stats.running, stats.failed) == (0, 0, 0, 0)
    for job_id in JOBS.values():
        assert await raw_redis.type(keys.job(job_id)) in (b"none", b"string")  # gone, or a done marker
