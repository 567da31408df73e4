"""What every engine offers `Job.dispatch()`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import Settings
    from .job import Job


class Engine(Protocol):
    settings: Settings

    async def dispatch(self, job: Job, *, durable: bool | None = None) -> str:
        """Store `job` (or, for the sync engine, run it) and return its id.

        `durable=True` also waits for replicas (RedisEngine; see durable.py); None follows
        the `durable` setting. An engine without replicas ignores it.
        """
        ...

    async def dispatch_many(self, jobs: Sequence[Job], *, durable: bool | None = None) -> list[str]:
        """Store (or run) many jobs; return their ids in order. `durable` as for dispatch()."""
        ...

    async def aclose(self) -> None: ...
