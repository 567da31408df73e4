"""A FastAPI/Starlette lifespan that opens the engine, and optionally a worker, for the app's life.

    from fastapi import FastAPI
    from aiojobs_redis.integrations.asgi import lifespan

    app = FastAPI(lifespan=lifespan(worker_queues=["default"]))   # worker_queues: optional

Routes dispatch with `await SomeJob().dispatch(...)` and nothing else: `connect()` installs
the engine process-wide, because request handlers never see a ContextVar set in the
lifespan's task. Keyword arguments other than the worker's go to `connect()`.

Your own lifespan runs inside this one, after the engine is open and before the worker
starts, so it may dispatch and jobs may use what it sets up; what it yields (Starlette's
lifespan state) is passed on. Either hand it over, or enter this one from yours:

    app = FastAPI(lifespan=lifespan(my_lifespan, worker_queues=["default"]))

    jobs = lifespan()

    @asynccontextmanager
    async def my_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with jobs(app):
            yield
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import anyio
import anyio.abc

from ..connection import connect
from ..engine import RedisEngine
from ..errors import EngineUnavailable
from ..sync import SyncEngine
from ..worker import Worker

log = logging.getLogger(__name__)

AppLifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def worker_for(
    engine: RedisEngine | SyncEngine,
    queues: Sequence[str] | None,
    concurrency: int,
    options: Mapping[str, Any] | None,
) -> Worker | None:
    """The in-process worker to run, if any (the sync engine runs jobs inside dispatch())."""
    if queues is None:
        return None
    if isinstance(engine, SyncEngine):
        log.info("JOB_ENGINE=sync runs jobs inside dispatch(): no worker started")
        return None
    names = [queues] if isinstance(queues, str) else list(queues)
    return Worker(engine, names, concurrency=concurrency, **(options or {}))


async def _started_in_time(tg: anyio.abc.TaskGroup, worker: Worker, seconds: float) -> bool:
    """Start the worker (it registers its queues first) within `seconds`, else cancel it: a
    Redis that froze since the engine opened must fail the app's startup, not hang it."""
    with anyio.move_on_after(seconds):
        await tg.start(worker.run)
        return True
    return False


class lifespan:
    """`lifespan(app_lifespan=None, *, worker_queues=None, concurrency=100, worker_options=None, **connect)`.

    Call the instance with the app for the async context manager FastAPI/Starlette expect.
    While it is open, `engine` (and `worker`, with `worker_queues`) are set. On shutdown the
    worker drains (no new claims; running jobs get `worker_options["grace"]`, default 30 s),
    then your lifespan exits, then the engine closes. Use one instance per app.
    """

    def __init__(
        self,
        app_lifespan: AppLifespan | None = None,
        *,
        worker_queues: Sequence[str] | None = None,
        concurrency: int = 100,
        worker_options: Mapping[str, Any] | None = None,
        **connect_kwargs: Any,
    ) -> None:
        self.app_lifespan = app_lifespan
        self.worker_queues = worker_queues
        self.concurrency = concurrency
        self.worker_options = worker_options
        self.connect_kwargs = connect_kwargs
        self.engine: RedisEngine | SyncEngine | None = None
        self.worker: Worker | None = None

    @asynccontextmanager
    async def __call__(self, app: Any) -> AsyncIterator[Any]:
        try:
            async with connect(**self.connect_kwargs) as engine:
                self.engine = engine
                inner = self.app_lifespan(app) if self.app_lifespan is not None else nullcontext()
                timeout = engine.settings.dispatch_timeout
                async with inner as state:
                    async with anyio.create_task_group() as tg:
                        worker = worker_for(engine, self.worker_queues, self.concurrency, self.worker_options)
                        started = worker is None or await _started_in_time(tg, worker, timeout)
                        if started:
                            self.worker = worker
                            try:
                                yield state
                            finally:
                                if worker is not None:
                                    worker.stop()  # leaving the task group waits for the drain
                    if not started:
                        raise EngineUnavailable(
                            f"starting the in-process worker: Redis did not answer within {timeout:g} s"
                        )
        finally:
            self.engine = self.worker = None
