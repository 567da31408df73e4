"""The worker's time: how long its side tasks sleep, and its deadlines (grace, backoff).

Production uses anyio's; tests pass a `FakeClock` (here, public as
`aiojobs_redis.testing.FakeClock`), which moves only when told to. A job's own `timeout`
stays on anyio: it is part of running the job.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import anyio
import anyio.lowlevel


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


class Changes:
    """Wake whoever waits for the next change (an anyio.Event made only when awaited)."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class FakeClock:
    """Milliseconds that move only when `advance()` says so.

    A worker's clock (pass `clock=`), a FakeEngine's, and a RedisEngine's (it is callable:
    the current time in ms). Sleepers and deadlines due by the new time wake on `advance()`.
    """

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now_ms = start_ms
        self._timers: list[tuple[int, int, Callable[[], None]]] = []  # (due ms, seq, fire)
        self._seq = itertools.count()
        self._changed = Changes()

    def __repr__(self) -> str:
        return f"<FakeClock {self.now_ms} ms, {len(self._timers)} timer(s)>"

    def __call__(self) -> int:
        return self.now_ms

    def monotonic(self) -> float:
        return self.now_ms / 1000

    def advance(self, seconds: float) -> None:
        """Move time on and wake every sleeper and deadline due by then, earliest first."""
        self.now_ms += round(seconds * 1000)
        while self._timers and self._timers[0][0] <= self.now_ms:
            heapq.heappop(self._timers)[2]()

    def pending(self) -> list[float]:
        """Seconds from now until each pending sleep or deadline, soonest first."""
        return sorted((due - self.now_ms) / 1000 for due, _, _ in self._timers)

    async def wait_for_timer(self, seconds: float) -> None:
        """Return once something sleeps, or has a deadline, exactly `seconds` from now."""
        await self.until(lambda: round(seconds * 1000) / 1000 in self.pending())

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, re-checked each time a sleep or deadline is set."""
        while not predicate():
            await self._changed.wait()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        if math.isinf(seconds):
            await anyio.sleep_forever()
        woken = anyio.Event()
        timer = self._add(seconds, woken.set)
        try:
            await woken.wait()
        finally:
            self._remove(timer)

    @contextlib.contextmanager
    def move_on_after(self, seconds: float) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as scope:
            if seconds <= 0:
                scope.cancel()
                yield scope
                return
            if math.isinf(seconds):
                yield scope
                return
            timer = self._add(seconds, scope.cancel)
            try:
                yield scope
            finally:
                self._remove(timer)

    def _add(self, seconds: float, fire: Callable[[], None]) -> tuple[int, int, Callable[[], None]]:
        timer = (self.now_ms + max(1, round(seconds * 1000)), next(self._seq), fire)
        heapq.heappush(self._timers, timer)
        self._changed.notify()
        return timer

    def _remove(self, timer: tuple[int, int, Callable[[], None]]) -> None:
        with contextlib.suppress(ValueError):
            self._timers.remove(timer)
            heapq.heapify(self._timers)
