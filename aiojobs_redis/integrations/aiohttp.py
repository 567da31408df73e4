"""Open the engine, and optionally a worker, for the life of an aiohttp application.

    from aiohttp import web
    from aiojobs_redis.integrations.aiohttp import ENGINE_KEY, setup

    app = web.Application()
    setup(app, worker_queues=["default"])   # worker_queues: optional

Handlers dispatch with `await SomeJob().dispatch(...)` (`connect()` installs the engine
process-wide); `request.app[ENGINE_KEY]` is the engine itself, for stats or failed jobs, and
`app.get(WORKER_KEY)` the in-process worker, if one runs. Keyword arguments other than the
worker's go to `connect()`. This is a `cleanup_ctx` entry: on startup it opens the engine and
starts the worker; on cleanup the worker drains (no new claims; running jobs get
`worker_options["grace"]`, default 30 s) and then the engine closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ..connection import connect
from ..engine import RedisEngine
from ..errors import ConfigurationError
from ..sync import SyncEngine
from ..worker import Worker
from .asgi import worker_for

try:
    from aiohttp import web
except ImportError:
    raise ConfigurationError(
        "the aiohttp integration needs the 'aiohttp' extra: pip install 'aiojobs-redis[aiohttp]'"
    ) from None

log = logging.getLogger(__name__)

ENGINE_KEY = web.AppKey[RedisEngine | SyncEngine]("engine")
WORKER_KEY = web.AppKey("worker", Worker)


def setup(
    app: web.Application,
    *,
    worker_queues: Sequence[str] | None = None,
    concurrency: int = 100,
    worker_options: Mapping[str, Any] | None = None,
    **connect_kwargs: Any,
) -> None:
    """Add the engine (and a worker serving `worker_queues`) to `app.cleanup_ctx`."""

    async def jobs_context(app: web.Application) -> AsyncIterator[None]:
        async with connect(**connect_kwargs) as engine:
            app[ENGINE_KEY] = engine
            worker = worker_for(engine, worker_queues, concurrency, worker_options)
            if worker is None:
                yield
                return
            app[WORKER_KEY] = worker
            task = asyncio.create_task(worker.run(), name="aiojobs-worker")
            task.add_done_callback(_log_crash)
            try:
                yield
            finally:
                worker.stop()
                await task

    app.cleanup_ctx.append(jobs_context)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the in-process worker stopped with an error", exc_info=task.exception())
