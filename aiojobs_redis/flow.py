"""Flow control of a queue, the engine's side, mixed into RedisEngine: pause and resume.

A queue's controls live in its hash ``jobs:{q}:meta`` (keys.py), so they apply to every
worker at once and survive restarts (and Redis restarts, with persistence). claim.lua reads
them on every claim; queue_ctl.lua writes them.

Pausing a queue stops new starts: no worker claims from it until it is resumed. Dispatch
still stores jobs, delayed jobs still become ready, running jobs run to their end (a retry
goes back into the paused queue). A sharded queue is paused with all its shards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from . import sharding
from .boundary import redis_errors, text
from .keys import validate_queue

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings
    from .keys import QueueKeys
    from .scripts import Scripts


def queue_and_shards(queue: str) -> list[str]:
    """The queue and, when it is a declared sharded queue, its shards."""
    return [q for group in sharding.expand([validate_queue(queue)]) for q in group]


class FlowControl:
    """RedisEngine's pause and resume."""

    settings: Settings
    redis: Redis
    scripts: Scripts

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        async def register_queues(self, queues: Iterable[str]) -> None: ...

    async def pause(self, queue: str) -> None:
        """Stop workers starting jobs of `queue` (and its shards) until resume()."""
        await self._control(queue_and_shards(queue), "paused", "1", action=f"pause {queue}")

    async def resume(self, queue: str) -> None:
        """Let workers start jobs of `queue` (and its shards) again; an idle worker wakes."""
        await self._control(queue_and_shards(queue), "paused", "", action=f"resume {queue}")

    async def paused(self, queues: Sequence[str]) -> list[bool]:
        """Whether each of `queues` is paused."""
        async with (
            redis_errors("read the paused queues", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for queue in queues:
                pipe.hexists(self.keys(queue).meta, "paused")
            return [bool(flag) for flag in await pipe.execute()]

    async def set_controls(self, queue: str, fields: Mapping[str, str | None]) -> None:
        """Set control fields of `queue`'s hash (None clears one); see claim.lua for them."""
        pairs = [item for field, value in fields.items() for item in (field, value or "")]
        await self._control([validate_queue(queue)], *pairs, action=f"set the controls of {queue}")

    async def declare_controls(self, queue: str, fields: Mapping[str, str | None]) -> bool:
        """Write fields a declaration owns (limits.py; None clears one) with their version `v`,
        unless the hash holds that version already. True when written."""
        async with redis_errors(f"read the controls of {queue}", timeout=self.settings.dispatch_timeout):
            stored = await self.redis.hget(self.keys(queue).meta, "v")
        if stored is not None and text(stored) == fields.get("v"):
            return False
        await self.set_controls(queue, fields)
        return True

    async def controls(self, queues: Sequence[str]) -> list[dict[str, str]]:
        """Each of `queues`' control hash (empty for a queue with no controls)."""
        async with (
            redis_errors("read the queue controls", timeout=self.settings.dispatch_timeout),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for queue in queues:
                pipe.hgetall(self.keys(queue).meta)
            replies = await pipe.execute()
        return [{text(k): text(v) for k, v in reply.items()} for reply in replies]

    async def _control(self, queues: Sequence[str], *pairs: str, action: str) -> None:
        """Set (or, with an empty value, clear) control fields of each of `queues`."""
        await self.register_queues(queues)
        async with redis_errors(action, timeout=self.settings.dispatch_timeout):
            for queue in queues:
                keys = self.keys(queue)
                await self.scripts.queue_ctl(keys=[keys.meta, keys.wake], args=list(pairs))
