"""Jobs that keep their results, for the results and progress tests (worker processes import it)."""

from __future__ import annotations

from typing import Any

import anyio

from aiojobs_redis import Job, PermanentFailure

QUEUE = "results"


class Sum(Job):
    """Returns the sum of payload["numbers"], after payload["sleep"] seconds, with progress."""

    name = "resultapp.Sum"
    queue = QUEUE
    keep_result = "+1 hour"

    async def handle(self) -> dict[str, Any]:
        await self.set_progress({"done": 0})
        await anyio.sleep(self.payload.get("sleep", 0))
        await self.set_progress({"done": 1})
        return {"sum": sum(self.payload["numbers"])}


class Briefly(Job):
    """Keeps its result for 300 ms only."""

    name = "resultapp.Briefly"
    queue = QUEUE
    keep_result = 0.3

    async def handle(self) -> str:
        return "soon gone"


class Refuses(Job):
    """Fails for good at once."""

    name = "resultapp.Refuses"
    queue = QUEUE
    keep_result = "+1 hour"

    async def handle(self) -> None:
        raise PermanentFailure("no such account")


class Unkeepable(Job):
    """Returns what JSON cannot hold."""

    name = "resultapp.Unkeepable"
    queue = QUEUE
    keep_result = "+1 hour"

    async def handle(self) -> object:
        return {"when": object()}


class Plain(Job):
    """Keeps no result."""

    name = "resultapp.Plain"
    queue = QUEUE

    async def handle(self) -> int:
        return 42
