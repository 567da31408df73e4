"""GroupCommit (batching.py): who is sent alone, who joins whose batch, and how errors spread."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from aiojobs_redis.batching import GroupCommit, PendingAck

pytestmark = pytest.mark.anyio


class GatedSender:
    """A sender whose round trips last until the test opens the gate."""

    def __init__(self, *, gated: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.fail_with: Exception | None = None
        self.refuse: set[str] = set()

    async def __call__(self, batch: list[PendingAck]) -> None:
        self.batches.append([p.job_id for p in batch])
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        for pending in batch:
            if pending.job_id in self.refuse:
                pending.error = LookupError(pending.job_id)
            else:
                pending.acked = True


def ack(job_id: str) -> PendingAck:
    return PendingAck(queue="q", job_id=job_id, token="t")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_call_with_nothing_in_flight_is_sent_at_once_alone() -> None:
    sender = GatedSender(gated=False)
    commit = GroupCommit[PendingAck](sender)
    first, second = ack("a"), ack("b")
    await commit.submit(first)
    await commit.submit(second)
    assert sender.batches == [["a"], ["b"]]
    assert first.acked and second.acked


async def test_calls_made_during_a_round_trip_share_the_next_one() -> None:
    sender = GatedSender()
    commit = GroupCommit[PendingAck](sender)
    items = [ack(name) for name in "abcd"]
    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(commit.submit, item)
            await wait_all_tasks_blocked()
        assert sender.batches == [["a"]]  # b leads the next batch, c and d follow it
        sender.gate.set()
    assert sender.batches == [["a"], ["b", "c", "d"]]
    assert all(item.acked for item in items)


async def test_an_error_set_on_one_item_is_raised_to_its_caller_only() -> None:
    sender = GatedSender()
    sender.refuse = {"c"}
    commit = GroupCommit[PendingAck](sender)
    outcomes: dict[str, str] = {}

    async def submit(item: PendingAck) -> None:
        try:
            await commit.submit(item)
            outcomes[item.job_id] = "ok"
        except LookupError:
            outcomes[item.job_id] = "refused"

    async with anyio.create_task_group() as tg:
        for name in "abcd":
            tg.start_soon(submit, ack(name))
            await wait_all_tasks_blocked()
        sender.gate.set()
    assert outcomes == {"a": "ok", "b": "ok", "c": "refused", "d": "ok"}


async def test_a_sender_that_raises_fails_the_leader_and_every_follower() -> None:
    sender = GatedSender()
    commit = GroupCommit[PendingAck](sender)
    raised: list[str] = []

    async def submit(item: PendingAck) -> None:
        try:
            await commit.submit(item)
        except ConnectionError:
            raised.append(item.job_id)

    async with anyio.create_task_group() as tg:
        for name in "abc":
            tg.start_soon(submit, ack(name))
            await wait_all_tasks_blocked()
        sender.fail_with = ConnectionError("gone")
        sender.gate.set()
    assert sorted(raised) == ["a", "b", "c"]
    assert commit._in_flight is None and commit._collecting is None  # ready for the next call
    sender.fail_with = None
    await commit.submit(ack("e"))
    assert sender.batches[-1] == ["e"]


async def test_a_cancelled_leader_still_sends_its_batch_so_followers_never_hang() -> None:
    sender = GatedSender()
    commit = GroupCommit[PendingAck](sender)
    leader, follower = ack("b"), ack("c")
    async with anyio.create_task_group() as tg:
        tg.start_soon(commit.submit, ack("a"))  # in flight until the gate opens
        await wait_all_tasks_blocked()
        async with anyio.create_task_group() as leader_group:
            leader_group.start_soon(commit.submit, leader)
            await wait_all_tasks_blocked()
            tg.start_soon(commit.submit, follower)
            await wait_all_tasks_blocked()
            leader_group.cancel_scope.cancel()  # the leader's caller gives up while it waits
            sender.gate.set()
    assert sender.batches == [["a"], ["b", "c"]]
    assert follower.acked and leader.acked
