"""Waiting for state that other processes, or a worker's background tasks, change.

Tests of one process wait on events; these two poll, for what only polling can see (a
ledger file, a server's replies, another process's metrics). Both return the seconds it
took and fail naming `what` when `timeout` runs out.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable

import anyio

INTERVAL_S = 0.02


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 20,
    what: str = "a condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> float:
    """Block until `predicate()` is truthy; an exception in `ignore` counts as not yet."""
    started = time.monotonic()
    while not _holds(predicate, ignore):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(INTERVAL_S)
    return time.monotonic() - started


async def eventually(
    check: Callable[[], Awaitable[object]] | Callable[[], object],
    timeout: float = 20,
    what: str = "a condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
    give_up: Callable[[], str | None] = lambda: None,
) -> float:
    """Await until `check()` (a plain or a coroutine function) is truthy.

    `give_up()` returns why waiting longer is pointless (a worker exited), or None.
    """
    started = time.monotonic()
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return time.monotonic() - started
        except ignore:
            pass
        reason = give_up()
        if reason is not None:
            raise AssertionError(f"waiting for {what}: {reason}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(INTERVAL_S)


def _holds(predicate: Callable[[], object], ignore: tuple[type[BaseException], ...]) -> bool:
    try:
        return bool(predicate())
    except ignore:
        return False
