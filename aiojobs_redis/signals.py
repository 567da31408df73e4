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


async def drain_on_signal(worker: Worker) -> int:
    """Run `worker` until it stops; the first SIGTERM or SIGINT drains it, a second stops at once.

    Draining: nothing more is claimed, running jobs get the worker's grace period, the rest
    go back to their queue. What the CLI's `work` command does; for your own entry point.
    Returns the exit status a shell expects: 0 once the worker has stopped by itself or
    drained, 128 + the signal's number (130 for SIGINT, 143 for SIGTERM) when a second
    signal stopped it at once, abandoning the jobs it ran (see abandoned_line()).
    """
    forced: list[tuple[signal.Signals, int]] = []  # the second signal, and the jobs then running
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if not worker.stopping:
                        log.info("received %s: draining", signal.Signals(signum).name)
                        worker.stop()
                    else:
                        log.warning("received %s again: stopping now", signal.Signals(signum).name)
                        forced.append((signal.Signals(signum), worker.running_count))
                        tg.cancel_scope.cancel()
                        return

        tg.start_soon(watch, name="aiojobs-signals")
        await worker.run()
        tg.cancel_scope.cancel()  # the worker has stopped: so can the signal watcher
    if not forced:
        return 0
    signum, running = forced[0]
    log.warning("%s", abandoned_line(worker, running, signum))
    return 128 + signum


def abandoned_line(worker: Worker, running: int, signum: signal.Signals) -> str:
    """The last word of a worker stopped at once: what became of the jobs it was running."""
    stopped = f"worker {worker.worker_id} stopped at once by a second {signum.name}"
    if not running:
        return f"{stopped}, with no job running"
    lease = worker.lease_ms / 1000
    return (
        f"{stopped}: {running} running job(s) cut off (counted lost). They run again once their lease "
        f"lapses, within {lease:g} s, when a worker serving their queue (another one, or the "
        "next started) reaps them; no attempt is used, but each counts as a stall (--max-stalls)"
    )
