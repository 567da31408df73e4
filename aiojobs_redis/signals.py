"""Running a worker from your own entry point, as the CLI's `work` command does.

async with connect() as engine:
    await drain_on_signal(Worker(engine, ["payments"]))
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("aiojobs_redis.worker")


async def drain_on_signal(worker: Worker) -> None:
    """Run `worker` until it stops; the first SIGTERM or SIGINT drains it, a second stops at once.

    Draining: nothing more is claimed, running jobs get the worker's grace period, the rest
    go back to their queue. What the CLI's `work` command does; for your own entry point.
    """
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if not worker.stopping:
                        log.info("received %s: draining", signal.Signals(signum).name)
                        worker.stop()
                    else:
                        log.warning("received %s again: stopping now", signal.Signals(signum).name)
                        tg.cancel_scope.cancel()
                        return

        tg.start_soon(watch, name="aiojobs-signals")
        await worker.run()
        tg.cancel_scope.cancel()  # the worker has stopped: so can the signal watcher
