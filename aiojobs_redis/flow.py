"""Flow control of a queue, the engine's side, mixed into RedisEngine: pause and resume.

A queue's controls live in its hash ``jobs:{q}:meta`` (keys.py), so they apply to every
worker at once and survive restarts (and Redis restarts, with persistence). claim.lua reads
them on every claim; queue_ctl.lua writes them.

Pausing a queue stops new starts: no worker claims from it until it is resumed. Dispatch
still stores jobs, delayed jobs still become ready, running jobs run to their end (a retry
goes back into the paused queue). A sharded queue is paused with all its shards: those
declared in this process, and those Redis knows of (so a command line that imports no Job
class reaches them too).

`pause()` and `resume()` below act through the current engine, as `Job.dispatch()` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import sharding
from .boundary import redis_errors, text
from .context import current_engine
from .errors import ConfigurationError
from .keys import validate_queue

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings
    from .keys import QueueKeys
    from .scripts import Scripts


def queue_and_shards(queue: str) -> list[str]:
    """The queue and, when it is a declared sharded queue, its shards."""
    return [q for group in sharding.expand([validate_queue(queue)]) for q in group]


def unknown_queues(queues: Sequence[str], known: Sequence[str]) -> list[str]:
    """The names in `queues` that are not among the `known` queues, nor a sharded queue of
    known shards (the command line and the dashboard refuse them as typos)."""
    parents = {q.partition(sharding.SEPARATOR)[0] for q in known}
    return [q for q in queues if q not in parents and q not in known]


async def pause(queue: str) -> bool:
    """Pause `queue` (and its shards) through the current engine: see FlowControl.pause."""
    return bool(await _flow_method("pause", queue)(queue))


async def resume(queue: str) -> bool:
    """Resume `queue` (and its shards) through the current engine: see FlowControl.resume."""
    return bool(await _flow_method("resume", queue)(queue))


def _flow_method(name: str, queue: str) -> Any:
    validate_queue(queue)
    engine = current_engine()
    method = getattr(engine, name, None)
    if method is None:
        raise ConfigurationError(
            f"{type(engine).__name__} cannot {name} queues: it has no queue to hold jobs in "
            "(the sync engine runs each job when it is dispatched)"
        )
    return method


class FlowControl:
    """RedisEngine's pause and resume."""

    settings: Settings
    redis: Redis
    scripts: Scripts

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys: ...

        async def register_queues(self, queues: Iterable[str]) -> None: ...

        async def known_queues(self) -> list[str]: ...

    async def pause(self, queue: str) -> bool:
        """Stop workers starting jobs of `queue` (and its shards) until resume(). True when
        this call paused it (or a shard of it); False when all were paused already."""
        queues = await self._with_shards(queue)
        return await self._control(queues, "paused", "1", action=f"pause {queue}") > 0

    async def resume(self, queue: str) -> bool:
        """Let workers start jobs of `queue` (and its shards) again; an idle worker wakes.
        True when this call resumed it (or a shard of it); False when none was paused."""
        queues = await self._with_shards(queue)
        return await self._control(queues, "paused", "", action=f"resume {queue}") > 0

    async def _with_shards(self, queue: str) -> list[str]:
        """The queue, its declared shards, and the shards of it that Redis knows of."""
        queues = queue_and_shards(queue)
        if sharding.SEPARATOR not in queue:
            prefix = queue + sharding.SEPARATOR
            queues += [q for q in await self.known_queues() if q.startswith(prefix) and q not in queues]
        return queues

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

    async def _control(self, queues: Sequence[str], *pairs: str, action: str) -> int:
        """Set (or, with an empty value, clear) control fields of each of `queues`; return
        how many fields changed."""
        await self.register_queues(queues)
        changed = 0
        async with redis_errors(action, timeout=self.settings.dispatch_timeout):
            for queue in queues:
                keys = self.keys(queue)
                changed += int(await self.scripts.queue_ctl(keys=[keys.meta, keys.wake], args=list(pairs)))
        return changed
