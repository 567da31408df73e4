"""Removing a test's keys: by prefix, never a flush (the Redis may be shared)."""

from __future__ import annotations

from aiojobs_redis import RedisEngine, Settings


async def delete_prefix(url: str, prefix: str, db: int | None = None) -> None:
    """Delete the keys under `prefix` on the server or deployment at `url` (every Cluster primary)."""
    async with RedisEngine(Settings(url=url, prefix=prefix, db=db)) as engine:
        async for key in engine.redis.scan_iter(match=f"{prefix}*", count=1000):
            await engine.redis.delete(key)
