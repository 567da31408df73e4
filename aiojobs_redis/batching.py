"""Group commit: concurrent calls of one kind (dispatch, ack) share one round trip to Redis.

The first caller becomes the batch's leader. It yields once so that calls started in the
same event-loop turn can join, waits until the previous batch's round trip is over (so
batches grow with load instead of piling up), then sends the whole batch. No background
task is involved; the leader's send is shielded so that its followers never hang on a
cancelled leader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel


@dataclass(slots=True, eq=False)
class Pending:
    """One call waiting in a batch. The sender fills in `error` or the subclass's result."""

    done: anyio.Event | None = None  # made only for a follower, which waits on it
    error: BaseException | None = None


@dataclass(slots=True, eq=False)
class PendingDispatch(Pending):
    queue: str = ""
    kind: tuple[str, int, int] = ("", 1, 0)  # name, max attempts, delay ms: one call per kind
    job_id: str = ""
    payload: bytes = b""


@dataclass(slots=True, eq=False)
class PendingAck(Pending):
    queue: str = ""
    job_id: str = ""
    token: str = ""
    acked: bool = False


P = TypeVar("P", bound=Pending)


class GroupCommit(Generic[P]):
    def __init__(self, send: Callable[[list[P]], Awaitable[None]]) -> None:
        self._send = send  # must set `error` on items it could not complete, never raise
        self._collecting: list[P] | None = None
        self._in_flight: anyio.Event | None = None

    async def submit(self, item: P) -> None:
        """Return once `item` is done; raise its error otherwise."""
        if self._collecting is not None:
            item.done = anyio.Event()
            self._collecting.append(item)
            await item.done.wait()
        else:
            await self._lead(item)
        if item.error is not None:
            raise item.error

    async def _lead(self, item: P) -> None:
        batch = self._collecting = [item]
        with anyio.CancelScope(shield=True):
            try:
                await anyio.lowlevel.checkpoint()
                while self._in_flight is not None:
                    await self._in_flight.wait()
            finally:
                self._collecting = None
            flight = self._in_flight = anyio.Event()
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
