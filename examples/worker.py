"""A worker written in Python, the same as

    aiojobs-redis work --import examples.jobs --queue payments --queue warehouse --queue default

Run it from the repository root (queues in priority order; these three unless given):

    python -m examples.worker [QUEUE ...]

The first SIGTERM or Ctrl-C drains: nothing more is claimed, running jobs get up to 30 s to
finish, the rest go back to their queue, and the process exits 0. A second signal stops at
once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import anyio

import examples.jobs  # noqa: F401  (defines, and so registers, the job classes the worker runs)
from aiojobs_redis import Worker, connect, drain_on_signal

QUEUES = ("payments", "warehouse", "default")


async def main(queues: Sequence[str]) -> None:
    async with connect(engine="redis") as engine:
        await drain_on_signal(Worker(engine, queues, concurrency=50, grace=30))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    anyio.run(main, sys.argv[1:] or QUEUES)
