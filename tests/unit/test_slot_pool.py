"""SlotPool on its own: the limit, idle slots parked on futures, the waiting line, context hygiene."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

import anyio
import pytest

from aiojobs_redis._slots import SlotPool

pytestmark = pytest.mark.anyio

leaked: ContextVar[str] = ContextVar("leaked")


class Items:
    """Records runs; each item waits for its gate unless it is open already."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.gates: dict[int, anyio.Event] = {}
        self.tasks: list[object] = []
        self.seen_vars: list[str | None] = []

    def gate(self, n: int) -> anyio.Event:
        return self.gates.setdefault(n, anyio.Event())

    async def run(self, n: int) -> None:
        self.started.append(n)
        self.tasks.append(anyio.get_current_task().id)
        self.seen_vars.append(leaked.get(None))
        await self.gate(n).wait()
        if n < 0:
            leaked.set(f"left by {n}")


@asynccontextmanager
async def opened(pool: SlotPool[int]) -> AsyncIterator[SlotPool[int]]:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool.open(tg)
            yield pool
            pool.close()


async def settle() -> None:
    """Let started tasks reach their first wait (each is one step from it)."""
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


async def test_never_more_slots_than_the_limit_and_the_rest_wait_in_order() -> None:
    items = Items()
    async with opened(SlotPool(2, items.run)) as pool:
        for n in range(4):
            pool.hand_over(n)
        await settle()
        assert items.started == [0, 1] and pool.slots == 2 and pool.waiting == 2
        items.gate(1).set()
        await settle()
        assert items.started == [0, 1, 2] and pool.slots == 2 and pool.waiting == 1
        for n in range(4):
            items.gate(n).set()
    assert items.started == [0, 1, 2, 3] and pool.slots == 0


async def test_a_free_slot_parks_and_takes_the_next_item_in_the_same_task() -> None:
    items = Items()
    async with opened(SlotPool(3, items.run)) as pool:
        items.gate(0).set()
        items.gate(1).set()
        pool.hand_over(0)
        await settle()
        assert pool.slots == 1 and pool.idle == 1
        pool.hand_over(1)
        await settle()
        assert pool.slots == 1, "the idle slot took it: no new task"
    assert items.tasks[0] == items.tasks[1]


async def test_close_ends_idle_slots_and_busy_ones_after_their_item() -> None:
    items = Items()
    async with opened(SlotPool(2, items.run)) as pool:
        items.gate(0).set()
        pool.hand_over(0)
        pool.hand_over(1)
        await settle()
        assert pool.idle == 1 and pool.slots == 2
        pool.close()
        await settle()
        assert pool.slots == 1
        items.gate(1).set()
    assert pool.slots == 0


async def test_an_item_that_leaves_context_variables_set_ends_its_slot() -> None:
    items = Items()
    async with opened(SlotPool(1, items.run)) as pool:
        items.gate(-1).set()
        items.gate(2).set()
        pool.hand_over(-1)  # sets `leaked` in its slot's context
        pool.hand_over(2)
    assert items.seen_vars == [None, None], "the next item ran in a fresh task"
    assert items.tasks[0] != items.tasks[1]


async def test_slots_start_in_the_context_the_pool_was_opened_in_not_the_caller_s() -> None:
    items = Items()
    pool: SlotPool[int] = SlotPool(1, items.run)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool.open(tg)
            token = leaked.set("the caller's")
            try:
                items.gate(1).set()
                pool.hand_over(1)
            finally:
                leaked.reset(token)
            pool.close()
    assert items.seen_vars == [None]


async def test_an_idle_slot_cancelled_while_parked_is_skipped() -> None:
    items = Items()
    async with opened(SlotPool(2, items.run)) as pool:
        items.gate(0).set()
        pool.hand_over(0)
        await settle()
        assert pool.idle == 1
        pool._idle[0].cancel()  # as when its task is cancelled while parked
        await settle()
        items.gate(1).set()
        pool.hand_over(1)
        await settle()
        assert items.started == [0, 1]


def test_a_pool_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        SlotPool(0, Items().run)


async def test_handing_over_before_open_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not open"):
        SlotPool(1, Items().run).hand_over(1)
