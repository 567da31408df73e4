"""Rate groups and RateLimited with real workers on the real Redis: fairness across groups
under a per-group rate, a 429 holding only its group, and max_throttles. Each test prints
the figures it measured."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, ClassVar

import anyio
import orjson
import pytest
from support.engine_calls import engine_with

from aiojobs_redis import Job, RateLimited, RedisEngine, Settings, Worker

pytestmark = pytest.mark.anyio

FAIR_QUEUE = "groups-fair"
HOLD_QUEUE = "groups-429"


class Starts:
    """Start times (time.time(), the clock Redis TIME reads too) per group."""

    def __init__(self) -> None:
        self.at: dict[str, list[float]] = defaultdict(list)
        self.changed = anyio.Event()

    def add(self, group: str) -> None:
        self.at[group].append(time.time())
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()


class FairTenantJob(Job):
    queue = FAIR_QUEUE
    group = "t{tenant}"

    async def handle(self) -> None:
        await anyio.sleep(0.01)


class PartnerJob(Job):
    """Group "hot": its first run anywhere gets a 429 (RateLimited for 2 s)."""

    queue = HOLD_QUEUE
    group = "{g}"
    starts: ClassVar[Starts] = Starts()
    limited_at: ClassVar[list[float]] = []

    async def handle(self) -> None:
        PartnerJob.starts.add(self.payload["g"])
        if self.payload.get("limit") and not PartnerJob.limited_at:
            PartnerJob.limited_at.append(time.time())
            raise RateLimited("+2 seconds")
        await anyio.sleep(self.payload.get("sleep", 0))


class AlwaysLimitedJob(Job):
    queue = HOLD_QUEUE
    group = "{g}"
    max_throttles = 2
    runs: ClassVar[int] = 0

    async def handle(self) -> None:
        AlwaysLimitedJob.runs += 1
        raise RateLimited(0.05)


@asynccontextmanager
async def workers(
    engine: RedisEngine, queue: str, count: int, **options: Any
) -> AsyncIterator[list[RedisEngine]]:
    """`count` workers, each on an engine of its own (as each would be in its own process)."""
    options.setdefault("idle_wait", 1.0)
    async with AsyncExitStack() as stack:
        engines = [await stack.enter_async_context(RedisEngine(engine.settings)) for _ in range(count)]
        runners = [Worker(own, [queue], telemetry=False, **options) for own in engines]
        async with anyio.create_task_group() as tg:
            for runner in runners:
                await tg.start(runner.run)
            try:
                yield engines
            finally:
                for runner in runners:
                    runner.stop()


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most starts in any window of `window` (times in seconds, any order)."""
    times = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


async def test_a_big_group_does_not_delay_small_ones_and_no_group_passes_its_rate(
    settings: Settings,
) -> None:
    burst = 2
    async with engine_with(settings, keep_done_ms=600_000) as engine:
        await engine.set_controls(FAIR_QUEUE, {"grate": str(1_000_000 // 5), "gburst": str(burst)})
        ids = await FairTenantJob.dispatch_many([{"tenant": 0}] * 1000)
        for tenant in range(1, 100):
            ids += await FairTenantJob.dispatch_many([{"tenant": tenant}] * 10)
        keys = engine.keys(FAIR_QUEUE)

        async def started() -> dict[str, list[float]]:
            async with engine.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(keys.job(job_id), "g", "b")
                replies = await pipe.execute()
            by_group: dict[str, list[float]] = defaultdict(list)
            for group, began in replies:
                if began is not None:
                    by_group[group.decode()].append(int(began) / 1000)
            return by_group

        async with workers(engine, FAIR_QUEUE, 2, concurrency=100):
            with anyio.fail_after(20):
                while sum(len(v) for g, v in (await started()).items() if g != "t0") < 990:
                    await anyio.sleep(0.2)
            await anyio.sleep(1.0)  # the big group goes on at its own rate
        by_group = await started()
    first = min(min(v) for v in by_group.values())
    small_last = max(max(v) for g, v in by_group.items() if g != "t0")
    windows = {g: max_in_window(v) for g, v in by_group.items()}
    big = sorted(by_group["t0"])
    print(
        f"\nfairness: 99 small groups x 10 jobs all started {small_last - first:.2f} s after the first "
        f"start; most starts of one group in any 1 s window: {max(windows.values())} (limit 5 + {burst}); "
        f"big group: {len(big)} starts in {big[-1] - big[0]:.2f} s"
    )
    assert small_last - first <= 3.0
    assert max(windows.values()) <= 5 + burst
    assert all(len(by_group[f"t{t}"]) == 10 for t in range(1, 100))
    assert len(big) >= 5  # still going, at its own rate, and not starved


async def test_a_429_holds_its_group_for_its_retry_after_and_no_other(engine: RedisEngine) -> None:
    PartnerJob.starts, PartnerJob.limited_at = Starts(), []
    await engine.set_controls(HOLD_QUEUE, {"gmaxrun": "1"})
    limited = await PartnerJob.dispatch({"g": "hot", "limit": True})
    await PartnerJob.dispatch_many([{"g": "hot"}] * 3)
    await PartnerJob.dispatch_many([{"g": "cold", "sleep": 0.2}] * 15)
    starts = PartnerJob.starts
    async with workers(engine, HOLD_QUEUE, 2, concurrency=10):
        await starts.wait_for(lambda: len(starts.at["hot"]) >= 5 and len(starts.at["cold"]) >= 15, 20)
        with anyio.fail_after(10):
            while (await engine.stats(HOLD_QUEUE))[0].running:
                await anyio.sleep(0.05)
    [raised] = PartnerJob.limited_at
    hot_after = [t for t in starts.at["hot"] if t > raised]
    cold_during = [t for t in starts.at["cold"] if raised < t < raised + 2]
    print(
        f"\n429: next start of its group {min(hot_after) - raised:.2f} s after it (retry_after 2 s); "
        f"{len(cold_during)} starts of another group during the hold"
    )
    assert min(hot_after) >= raised + 2.0
    assert len(cold_during) >= 3  # other groups kept running
    info = await engine.get_job(HOLD_QUEUE, limited)
    assert info is None or info.state == "done"  # done (and deleted, by default)
    failed = await engine.stats(HOLD_QUEUE)
    assert failed[0].failed == 0  # attempts = 1: the 429 used none


async def test_after_max_throttles_a_429_is_a_failed_attempt(engine: RedisEngine) -> None:
    AlwaysLimitedJob.runs = 0
    job_id = await AlwaysLimitedJob.dispatch({"g": "x"})
    async with workers(engine, HOLD_QUEUE, 1, concurrency=2):
        with anyio.fail_after(10):
            while (await engine.stats(HOLD_QUEUE))[0].failed == 0:
                await anyio.sleep(0.05)
    raw = await engine.redis.hmget(engine.keys(HOLD_QUEUE).job(job_id), "h", "a", "e")
    throttles, attempts, error = raw
    assert throttles is not None and attempts is not None and error is not None
    assert AlwaysLimitedJob.runs == 3  # two throttles, then the attempt
    assert (int(throttles), int(attempts)) == (2, 1)
    assert orjson.loads(error)["reason"] == "rate_limited"
    assert await engine.redis.hlen(engine.keys(HOLD_QUEUE).group_running) == 0
    # `failed retry` gives it fresh attempts and a fresh allowance of throttles.
    assert await engine.failed_retry([job_id], queue=HOLD_QUEUE) == 1
    assert await engine.redis.hget(engine.keys(HOLD_QUEUE).job(job_id), "h") is None


class PacedJob(Job):
    queue = FAIR_QUEUE
    group = "{g}"

    async def handle(self) -> None:
        return None


async def test_a_worker_waiting_on_a_group_neither_polls_nor_oversleeps(settings: Settings) -> None:
    async with engine_with(settings, keep_done_ms=600_000) as engine:
        await engine.set_controls(FAIR_QUEUE, {"grate": "1000000", "gburst": "1"})  # 1 start/s
        ids = await PacedJob.dispatch_many([{"g": "slow"}] * 4)
        claims = 0
        async with workers(engine, FAIR_QUEUE, 1, concurrency=10, idle_wait=5.0) as engines:
            [worker_engine] = engines
            original = worker_engine.claim_many

            async def counted(*args: Any, **kwargs: Any) -> Any:
                nonlocal claims
                claims += 1
                return await original(*args, **kwargs)

            worker_engine.claim_many = counted  # type: ignore[method-assign]
            with anyio.fail_after(15):
                while (await engine.stats(FAIR_QUEUE))[0].ready:
                    await anyio.sleep(0.1)
        starts = []
        for job_id in ids:
            b = await engine.redis.hget(engine.keys(FAIR_QUEUE).job(job_id), "b")
            assert b is not None
            starts.append(int(b))
    gaps = [(later - earlier) / 1000 for earlier, later in itertools.pairwise(sorted(starts))]
    print(f"\n1 start/s: gaps between starts {[f'{g:.2f}' for g in gaps]} s; {claims} claim calls in all")
    assert all(0.99 <= gap <= 1.5 for gap in gaps)  # not before its time, nor long after
    assert claims <= 40  # it waits for the group's time (in slices of at most 250 ms): no polling
