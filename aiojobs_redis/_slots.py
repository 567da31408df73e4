"""The worker's slot pool: up to `limit` long-lived tasks, each running items one at a time.

A task per job costs more than handing the next job to a task that is already there, so
a slot that finishes an item takes the next one waiting, or parks on a future until
`hand_over` gives it one. Asyncio futures, not anyio events: one allocation per park.

Context hygiene: slots start in the pool's own context (copied when it opens), never in an
item's; an item that leaves context variables set ends its slot, so the next item gets a
fresh task instead of inheriting them.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from anyio.abc import TaskGroup

T = TypeVar("T")
_MISSING = object()


class SlotPool(Generic[T]):
    """Runs `run(item)` for each handed-over item, at most `limit` at a time."""

    def __init__(self, limit: int, run: Callable[[T], Awaitable[None]], *, name: str = "slot") -> None:
        if limit < 1:
            raise ValueError("a slot pool needs a limit >= 1")
        self.limit = limit
        self._run = run
        self._name = name
        self._waiting: deque[T] = deque()  # handed over while every slot was busy
        self._idle: deque[asyncio.Future[T | None]] = deque()
        self.slots = 0  # slot tasks alive
        self._closed = False
        self._tasks: TaskGroup | None = None
        self._context: contextvars.Context | None = None

    def __repr__(self) -> str:
        return f"<SlotPool slots={self.slots}/{self.limit} idle={self.idle} waiting={self.waiting}>"

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> int:
        return sum(1 for slot in self._idle if not slot.done())

    def open(self, tasks: TaskGroup) -> None:
        """Start slots in `tasks`, in the context current now."""
        self._tasks, self._context, self._closed = tasks, contextvars.copy_context(), False

    def hand_over(self, item: T) -> None:
        """Give `item` to an idle slot, a new slot, or the first slot to come free."""
        while self._idle:
            slot = self._idle.popleft()
            if not slot.done():  # done: its task was cancelled while idle
                slot.set_result(item)
                return
        if self.slots < self.limit:
            self._start(item)
        else:
            self._waiting.append(item)

    def close(self) -> None:
        """Nothing more will be handed over: idle slots end, busy ones once nothing waits."""
        self._closed = True
        while self._idle:
            slot = self._idle.popleft()
            if not slot.done():
                slot.set_result(None)

    def _start(self, item: T) -> None:
        tasks, context = self._tasks, self._context
        if tasks is None or context is None:
            raise RuntimeError("the slot pool is not open")
        self.slots += 1
        context.run(lambda: tasks.start_soon(self._slot, item, name=self._name))

    async def _slot(self, item: T | None) -> None:
        base = contextvars.copy_context()
        try:
            while item is not None:
                await self._run(item)
                if not _context_unchanged(base):
                    break  # the item left context variables set: the next one gets a fresh task
                item = await self._next()
        finally:
            self.slots -= 1
        if self._waiting:
            self._start(self._waiting.popleft())

    async def _next(self) -> T | None:
        """The next item for a slot that came free; None once no more will come."""
        if self._waiting:
            return self._waiting.popleft()
        if self._closed:
            return None
        wake: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._idle.append(wake)
        return await wake


def _context_unchanged(base: contextvars.Context) -> bool:
    """Whether the current context holds exactly the variables and values of `base`."""
    now = contextvars.copy_context()
    return len(now) == len(base) and all(now.get(var, _MISSING) is value for var, value in base.items())
