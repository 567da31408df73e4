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
import signal
import sys
from collections.abc import Sequence

import anyio

import examples.jobs  # noqa: F401  (defines, and so registers, the job classes the worker runs)
from aiojobs_redis import Worker, connect

QUEUES = ("payments", "warehouse", "default")

log = logging.getLogger("examples.worker")


async def stop_on_signal(worker: Worker, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not worker.stopping:
                log.info("%s: draining", signal.Signals(signum).name)
                worker.stop()
            else:
                log.warning("%s again: stopping now", signal.Signals(signum).name)
                scope.cancel()
                return


async def main(queues: Sequence[str]) -> None:
    async with connect(engine="redis") as engine, anyio.create_task_group() as tg:
        worker = Worker(engine, queues, concurrency=50, grace=30)
        tg.start_soon(stop_on_signal, worker, tg.cancel_scope)
        await worker.run()
        tg.cancel_scope.cancel()  # the worker has stopped: so can the signal watcher


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    anyio.run(main, sys.argv[1:] or QUEUES)
