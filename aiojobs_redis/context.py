"""Where `Job.dispatch()` finds its engine.

`connect()` installs the engine process-wide, because a FastAPI/Starlette lifespan runs in
a task whose context request handlers never see. A ContextVar can still override it for
the current task and its children (tests, or two engines in one process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from .errors import EngineNotConnected

if TYPE_CHECKING:
    from .engine_base import Engine

_process_engines: list[Engine] = []  # innermost connect() last
_local_engine: ContextVar[Engine | None] = ContextVar("aiojobs_redis_engine", default=None)


def current_engine() -> Engine:
    engine = _local_engine.get() or (_process_engines[-1] if _process_engines else None)
    if engine is None:
        raise EngineNotConnected()
    return engine


def install(engine: Engine) -> None:
    _process_engines.append(engine)


def uninstall(engine: Engine) -> None:
    """Forget `engine`; an outer connect() block's engine becomes current again."""
    for index in range(len(_process_engines) - 1, -1, -1):
        if _process_engines[index] is engine:
            del _process_engines[index]
            return


@contextlib.contextmanager
def use_engine(engine: Engine) -> Iterator[Engine]:
    """Make `engine` the one `dispatch()` uses in this task (and tasks it starts)."""
    token = _local_engine.set(engine)
    try:
        yield engine
    finally:
        _local_engine.reset(token)
