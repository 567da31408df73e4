"""connect(): open the configured engine and make it the one Job.dispatch() uses."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from . import context
from .config import Settings
from .engine import Clock, RedisEngine
from .sync import SyncEngine


def open_engine(settings: Settings, *, clock: Clock | None = None) -> RedisEngine | SyncEngine:
    if settings.engine == "sync":
        return SyncEngine(settings)
    return RedisEngine(settings, clock=clock)


class connect:
    """Open the engine named by the settings (environment unless given) for `async with`.

    Inside the block, and in every task of the process, `await SomeJob().dispatch(...)`
    uses this engine. Arguments override the environment (JOB_ENGINE, REDIS_URL,
    REDIS_JOB_PREFIX, REDIS_JOB_DB).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str | None = None,
        db: int | None = None,
        engine: str | None = None,
        clock: Clock | None = None,
        install: bool = True,
        **options: Any,
    ) -> None:
        self.settings = Settings.from_env(url=url, prefix=prefix, db=db, engine=engine, **options)
        self._clock = clock
        self._install = install
        self._engine: RedisEngine | SyncEngine | None = None

    async def __aenter__(self) -> Any:
        # Any: the environment (JOB_ENGINE) picks the engine's class at run time.
        engine = open_engine(self.settings, clock=self._clock)
        try:
            await engine.__aenter__()
        except BaseException:
            await engine.aclose()
            raise
        self._engine = engine
        if self._install:
            context.install(engine)
        return engine

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            context.uninstall(engine)
            await engine.aclose()
