"""Jobs for worker processes the observability tests start (`--import support.dashjobs`)."""

from __future__ import annotations

import anyio

from aiojobs_redis import Job


class Tick(Job):
    """Sleeps `sleep` seconds (default none); `queue` is the class's unless dispatched elsewhere."""

    name = "dashjobs.Tick"  # stable whatever path imports it
    queue = "metered"

    async def handle(self) -> None:
        await anyio.sleep(float(self.payload.get("sleep", 0)))


class Noop(Job):
    """Does nothing: for measuring what the worker itself costs."""

    name = "dashjobs.Noop"
    queue = "bench"

    async def handle(self) -> None:
        return None
