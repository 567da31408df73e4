"""The worker's time: how long its side tasks sleep, and its deadlines (grace, backoff).

Production uses anyio's; tests pass `aiojobs_redis.testing.FakeClock`, which moves only
when told to. A job's own `timeout` stays on anyio: it is part of running the job.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Protocol

import anyio


class WorkerClock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def move_on_after(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        """A cancel scope cancelled `seconds` from now."""
        ...


class AnyioClock:
    """The event loop's own time."""

    monotonic = staticmethod(time.monotonic)  # no Python frame: read once per settle

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        return anyio.move_on_after(seconds)


ANYIO_CLOCK = AnyioClock()
