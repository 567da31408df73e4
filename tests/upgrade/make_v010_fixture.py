"""Write data as version 0.1.0 stores it, and dump it to JSON for test_upgrade_from_v010.py.

Run against the 0.1.0 code, not this tree's:

    git worktree add /tmp/v010 v0.1.0
    PYTHONPATH=/tmp/v010 .venv/bin/python tests/upgrade/make_v010_fixture.py \
        > tests/upgrade/v010_fixture.json

It stores, under a fresh prefix on $REDIS_URL (default redis://127.0.0.1:6379), one queue's
jobs in each state 0.1 knows: two waiting inline, one delayed, one waiting for its retry,
one failed and one running (its lease left to lapse). Time comes from a fixed fake clock,
so every due time and lease deadline lies in the past of any later run. The dump holds
every key under the prefix (type, value, TTL in ms or -1), with the prefix written as
PREFIX; the keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from typing import Any

from redis.asyncio import Redis

import aiojobs_redis
from aiojobs_redis import Job, RedisEngine, Settings, use_engine

QUEUE = "upgrade"
START_MS = 1_764_000_000_000  # 2025-11-24: before any run of the test
PLACEHOLDER = "PREFIX"


class Mark(Job):
    name = "upgrade.Mark"
    queue = QUEUE
    attempts = 3

    async def handle(self) -> None:
        return None


def _text(value: Any) -> str | dict[str, str]:
    """A value as JSON can hold it: text when it is UTF-8, else base64."""
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


async def dump(redis: Any, prefix: str) -> dict[str, Any]:
    """Every key under `prefix` (a redis.asyncio.Redis), the prefix written as PLACEHOLDER."""
    keys: dict[str, Any] = {}
    async for raw_key in redis.scan_iter(match=f"{prefix}*", count=1000):
        key = raw_key.decode()
        kind = (await redis.type(key)).decode()
        value: Any
        if kind == "string":
            value = _text(await redis.get(key))
        elif kind == "list":
            value = [_text(v) for v in await redis.lrange(key, 0, -1)]
        elif kind == "set":
            value = sorted(_text(v) for v in await redis.smembers(key))
        elif kind == "zset":
            value = [[_text(m), int(s)] for m, s in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "hash":
            value = {_text(f): _text(v) for f, v in (await redis.hgetall(key)).items()}
        else:
            raise SystemExit(f"unexpected {kind} at {key}")
        ttl_ms = await redis.pttl(key)
        keys[PLACEHOLDER + key[len(prefix) :]] = {"type": kind, "value": value, "ttl_ms": ttl_ms}
    return dict(sorted(keys.items()))


async def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    prefix = f"v010-fixture-{uuid.uuid4().hex[:8]}:"
    now = [START_MS]
    engine = RedisEngine(Settings(url=url, prefix=prefix), clock=lambda: now[0])
    raw = Redis.from_url(url)
    jobs: dict[str, str] = {}
    async with engine, raw:
        try:
            with use_engine(engine):
                for label in ("running", "retry_waiting", "failed", "inline_1", "inline_2"):
                    jobs[label] = await Mark({"label": label}).dispatch()
                jobs["delayed"] = await Mark({"label": "delayed"}).dispatch(delay=60)
            now[0] += 1_000
            claim = await engine.claim(  # type: ignore[attr-defined]  # 0.1.0 API: this script runs on it
                QUEUE, 3, worker_id="v010-worker", request_id="r1", lease_ms=30_000
            )
            held = {job.id: job for job in claim.jobs}
            assert set(held) == {jobs["running"], jobs["retry_waiting"], jobs["failed"]}, claim
            error = {"reason": "error", "type": "ValueError", "message": "boom"}
            assert await engine.retry(held[jobs["retry_waiting"]], 30_000, error)
            assert await engine.fail(held[jobs["failed"]], error)
            # The running job's lease is left to lapse, as if its worker had died.
            fixture = {
                "written_by": f"aiojobs-redis {getattr(aiojobs_redis, '__version__', '0.1.0')}",
                "made_by": "tests/upgrade/make_v010_fixture.py",
                "queue": QUEUE,
                "clock_ms": now[0],
                "jobs": jobs,
                "keys": await dump(raw, prefix),
            }
        finally:
            async for key in raw.scan_iter(match=f"{prefix}*", count=1000):
                await raw.delete(key)
    json.dump(fixture, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
