"""Workflows in one file: a chain that passes results along, a batch with a callback, and a
job that waits for two others; a worker runs them all in this process.

    python -m examples.workflows       # from the repository root

Uses the Redis at REDIS_URL when it is set, else an embedded server (as examples.demo does).
Keys go under a fresh prefix, deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, ClassVar

import anyio

from aiojobs_redis import Job, PermanentFailure, Worker, batch, chain, connect
from aiojobs_redis.embedded import embedded_server

QUEUE = "media"


class Fetch(Job):
    name = "examples.workflows.Fetch"
    queue = QUEUE
    keep_result = "+10 minutes"  # the next step reads it

    async def handle(self) -> dict[str, Any]:
        return {"url": self.payload["url"], "bytes": 1_000 * len(self.payload["url"])}


class Thumbnail(Job):
    name = "examples.workflows.Thumbnail"
    queue = QUEUE
    keep_result = "+10 minutes"

    async def handle(self) -> str:
        fetched = await self.dependency_result()  # the step before's result
        return f"thumb of {fetched['url']} ({fetched['bytes']} bytes)"


class Publish(Job):
    name = "examples.workflows.Publish"
    queue = QUEUE
    said: ClassVar[list[str]] = []

    async def handle(self) -> None:
        Publish.said.append(f"published {await self.dependency_result()}")


class Resize(Job):
    name = "examples.workflows.Resize"
    queue = QUEUE

    async def handle(self) -> None:
        if self.payload["img"] == 3:
            raise PermanentFailure("image 3 is corrupt")


class AlbumReady(Job):
    name = "examples.workflows.AlbumReady"
    queue = QUEUE

    async def handle(self) -> None:
        outcome = await self.batch_result()
        Publish.said.append(f"album: {outcome.done} of {outcome.total} resized, {outcome.failed} failed")


class Report(Job):
    name = "examples.workflows.Report"
    queue = QUEUE

    async def handle(self) -> None:
        Publish.said.append(f"report for {self.payload['day']} after both exports")


async def main(url: str) -> None:
    prefix = f"workflows-{uuid.uuid4().hex[:8]}:"
    async with connect(url, prefix=prefix) as engine:
        try:
            await chain(Fetch({"url": "https://example.com/cat.jpg"}), Thumbnail(), Publish()).dispatch()
            await batch([Resize({"img": i}) for i in range(6)], on_complete=AlbumReady()).dispatch()
            first = await Fetch({"url": "a"}).dispatch()
            second = await Fetch({"url": "b"}).dispatch()
            await Report({"day": "2026-12-01"}).dispatch(depends_on=[first, second])
            worker = Worker(engine, [QUEUE], burst=True, telemetry=False)
            await worker.run()
            for line in Publish.said:
                print(line)
            print(f"{worker.counters.succeeded} jobs done, {worker.counters.failed} failed")
        finally:
            keys = [key async for key in engine.redis.scan_iter(match=f"{prefix}*")]
            if keys:
                await engine.redis.delete(*keys)


def run() -> None:
    if url := os.environ.get("REDIS_URL"):
        anyio.run(main, url)
        return
    with embedded_server() as url:
        anyio.run(main, url)


if __name__ == "__main__":
    run()
