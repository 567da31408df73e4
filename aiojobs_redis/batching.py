"""Group commit: concurrent calls of one kind (dispatch, ack) share one round trip to Redis.

A call made while no round trip of its kind is in flight is sent at once, alone: a caller
that awaits one call after another pays no batching delay. A call made while one is in
flight becomes the next batch's leader: calls made until that round trip is over join it
(so batches grow with load instead of piling up), then the leader sends them all. No
background task is involved; a leader's send is shielded so that its followers never hang
on a cancelled leader.

The events are asyncio's: the engine runs on asyncio (redis.asyncio), and anyio's cost a
backend lookup each, on the path of every job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio


@dataclass(slots=True, eq=False)
class Pending:
    """One call waiting in a batch. The sender fills in `error` or the subclass's result."""

    done: asyncio.Event | None = None  # made only for a follower, which waits on it
    error: BaseException | None = None


@dataclass(slots=True, eq=False)
class PendingDispatch(Pending):
    queue: str = ""
    # name, max attempts, delay ms, priority level, rate group ('' none): one call per kind
    kind: tuple[str, int, int, int, str] = ("", 1, 0, 0, "")
    job_id: str = ""
    payload: bytes = b""
    # A unique job's lock suffix, flags and on_duplicate (dispatch_ex.lua); None: plain.
    unique: tuple[str, str, str] | None = None
    outcome: str = ""  # dispatch_ex.lua's word for what happened: stored, duplicate, ...


@dataclass(slots=True, eq=False)
class PendingAck(Pending):
    queue: str = ""
    job_id: str = ""
    token: str = ""
    acked: bool = False
    result: bytes | None = None  # the result JSON to keep, for a class with keep_result
    keep_ms: int = 0  # how long to keep it


P = TypeVar("P", bound=Pending)


class GroupCommit(Generic[P]):
    def __init__(self, send: Callable[[list[P]], Awaitable[None]]) -> None:
        self._send = send  # must set `error` on items it could not complete, never raise
        self._collecting: list[P] | None = None
        self._in_flight: asyncio.Event | None = None

    async def submit(self, item: P) -> None:
        """Return once `item` is done; raise its error otherwise."""
        if self._collecting is not None:
            item.done = asyncio.Event()
            self._collecting.append(item)
            await item.done.wait()
        elif self._in_flight is None:
            await self._send_alone(item)
        else:
            await self._lead(item)
        if item.error is not None:
            raise item.error

    async def _send_alone(self, item: P) -> None:
        """Nothing in flight: send now. No one can join, so no shield is needed."""
        flight = self._in_flight = asyncio.Event()
        try:
            await self._send([item])
        except Exception as exc:
            if item.error is None:
                item.error = exc
        finally:
            self._in_flight = None
            flight.set()

    async def _lead(self, item: P) -> None:
        batch = self._collecting = [item]
        with anyio.CancelScope(shield=True):
            try:
                while self._in_flight is not None:
                    await self._in_flight.wait()
            finally:
                self._collecting = None
            flight = self._in_flight = asyncio.Event()
            try:
                await self._send(batch)
            except Exception as exc:  # a sender that raises must not leave followers "done"
                for pending in batch:
                    if pending.error is None:
                        pending.error = exc
            finally:
                self._in_flight = None
                flight.set()
                for pending in batch:
                    if pending.done is not None:
                        pending.done.set()
