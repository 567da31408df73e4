"""Every key under a test's prefix with its value: to assert that a call changed nothing."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis


async def key_state(raw: Redis, prefix: str, *, skip: tuple[bytes, ...] = ()) -> dict[bytes, Any]:
    """{key: (type, value, expires)} for each key under `prefix`, but those ending in `skip`."""
    found: dict[bytes, Any] = {}
    async for key in raw.scan_iter(match=f"{prefix}*", count=1000):
        if skip and key.endswith(skip):
            continue
        kind = await raw.type(key)
        value: Any
        if kind == b"hash":
            value = await raw.hgetall(key)
        elif kind == b"zset":
            value = await raw.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            value = await raw.lrange(key, 0, -1)
        elif kind == b"set":
            value = await raw.smembers(key)
        else:
            value = await raw.get(key)
        found[key] = (kind, value, await raw.pttl(key) >= 0)
    return found
