"""The worker's scheduler side task: fires the ticks of the schedules it declares.

It sleeps until the earliest next tick (at most `max_sleep`), then sends one fire.lua call
per due schedule in one round trip. Redis decides: a tick earlier than Redis's TIME is
refused ('early'), and a tick already handled by another worker is 'already'. The task
reckons Redis's time as its clock's monotonic time plus an offset learnt from every reply,
so a host clock set minutes wrong changes nothing. With nothing due for `max_sleep`, it
still sends one 'seen' call per queue, so that doctor and the dashboard can tell that a
scheduler runs. A worker with no schedules does not start this task at all.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from .clock import WorkerClock
from .errors import EngineError
from .retry import Backoff
from .schedule_store import Fire, Fired
from .schedules import Schedule

log = logging.getLogger(__name__)

_NOT_DONE = frozenset({"early", "stale"})  # the tick must be reckoned and tried again


class SchedulingEngine(Protocol):
    async def declare_schedules(self, schedules: Sequence[Schedule]) -> None: ...

    async def fire_schedules(self, calls: Sequence[Fire]) -> list[Fired]: ...


class Scheduler:
    def __init__(
        self,
        engine: SchedulingEngine,
        schedules: Sequence[Schedule],
        clock: WorkerClock,
        *,
        stopping: Callable[[], bool] = lambda: False,
        max_sleep: float = 60.0,
    ) -> None:
        self.engine, self.schedules, self.clock = engine, list(schedules), clock
        self.stopping = stopping
        self.max_sleep = max_sleep
        self.queues = sorted({s.queue for s in schedules})
        self._offset_ms: float | None = None  # Redis's clock minus the monotonic clock
        self._handled: dict[tuple[str, str], int] = {}  # (queue, id) -> the last tick handled
        self._last_call = -float("inf")  # monotonic s
        self.outcomes: dict[str, int] = {}  # counts by outcome, for tests and logs

    def redis_now_ms(self) -> int:
        assert self._offset_ms is not None
        return int(self.clock.monotonic() * 1000 + self._offset_ms)

    async def run(self) -> None:
        backoff = Backoff()
        declared = False
        while not self.stopping():
            try:
                if not declared:
                    await self.engine.declare_schedules(self.schedules)
                    declared = True
                wait = await self.step()
                backoff.reset()
            except EngineError as exc:
                wait = backoff.next_delay()
                log.warning("firing schedules failed (%s); retrying in %.2f s", exc, wait)
            except Exception:  # a fault here must not stop the worker running jobs
                wait = backoff.next_delay()
                log.exception("firing schedules failed; retrying in %.2f s", wait)
            await self.clock.sleep(wait)

    async def step(self) -> float:
        """One round: fire what is due; return how long to sleep before the next."""
        if self._offset_ms is None:
            await self._send([Fire(queue) for queue in self.queues])
        now = self.redis_now_ms()
        calls = []
        for schedule in self.schedules:
            tick, next_tick = schedule.ticks(now)
            if tick > self._handled.get((schedule.queue, schedule.id), -1):
                calls.append(Fire(schedule.queue, schedule, tick, next_tick))
        if not calls and self.clock.monotonic() - self._last_call >= self.max_sleep:
            calls = [Fire(queue) for queue in self.queues]
        retry_soon = False
        for call, fired in zip(calls, await self._send(calls), strict=True):
            retry_soon = self._note(call, fired) or retry_soon
        return self._sleep_for(0.01 if retry_soon else None)

    async def _send(self, calls: Sequence[Fire]) -> list[Fired]:
        if not calls:
            return []
        sent = self.clock.monotonic()
        replies = await self.engine.fire_schedules(calls)
        received = self.clock.monotonic()
        self._last_call = received
        # The reply's time is somewhere in the round trip: take its middle.
        self._offset_ms = replies[-1].redis_now_ms - (sent + received) * 500
        return replies

    def _note(self, call: Fire, fired: Fired) -> bool:
        self.outcomes[fired.outcome] = self.outcomes.get(fired.outcome, 0) + 1
        schedule = call.schedule
        if schedule is None:
            return False
        if fired.outcome in _NOT_DONE:
            return True
        self._handled[(schedule.queue, schedule.id)] = call.tick_ms
        if fired.outcome == "fired":
            log.info("schedule %s: tick %d fired as job %s", schedule.id, call.tick_ms, fired.job_id)
        elif fired.outcome == "overlap":
            log.info("schedule %s: tick %d skipped, %s still live", schedule.id, call.tick_ms, fired.job_id)
        elif fired.outcome == "late":
            log.warning("schedule %s: tick %d missed (older than its grace)", schedule.id, call.tick_ms)
        return False

    def _sleep_for(self, at_most: float | None) -> float:
        now = self.redis_now_ms()
        wait = self.max_sleep if at_most is None else at_most
        for schedule in self.schedules:
            _tick, next_tick = schedule.ticks(now)
            wait = min(wait, (next_tick - now) / 1000)
        # A little jitter, so that workers woken by one tick do not all call in the same ms.
        return max(0.0, wait) + random.uniform(0.0, 0.02)
