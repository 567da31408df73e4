"""A run under failover: dispatchers that keep going, and what the ledger says afterwards."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from aiojobs_redis import EngineError, Job, NotReplicated, RedisEngine
from support.ledger import LedgerReport, Run, check, read_ledger

FULL = os.environ.get("AIOJOBS_CLUSTER_SCALE") == "full"


@dataclass
class Producers:
    """`tasks` tasks each dispatching a job every `pause` s until stopped.

    `acked` holds the ids Redis acknowledged (with a durable engine: that replicas did),
    with the time; `unconfirmed` ids a durable dispatch stored but could not confirm;
    `failures` the times of dispatches that raised (not acknowledged: not counted).
    """

    engine: RedisEngine
    make_job: Callable[[], Job]
    tasks: int = 3
    pause: float = 0.02
    acked: dict[str, float] = field(default_factory=dict)
    unconfirmed: dict[str, float] = field(default_factory=dict)
    failures: list[float] = field(default_factory=list)

    async def run(self, stop: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self.tasks):
                tg.start_soon(self._produce, stop)

    async def _produce(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            try:
                job_id = await self.engine.dispatch(self.make_job())
                self.acked[job_id] = time.time()
            except NotReplicated as exc:
                for job_id in exc.job_ids:
                    self.unconfirmed[job_id] = time.time()
            except EngineError:
                self.failures.append(time.time())
            await anyio.sleep(self.pause)


async def settle(engine: RedisEngine, queue: str, ledger_dir: Path, ids: set[str], timeout: float) -> float:
    """Wait until `queue` is empty and every id in `ids` finished (or `timeout`); seconds taken."""
    started = time.monotonic()
    with anyio.move_on_after(timeout):
        while True:
            try:
                stats = await engine.stats(queue)
            except EngineError:
                stats = []
            if stats and all(s.ready == s.delayed == s.running == 0 for s in stats):
                finished = {r.job_id for r in read_ledger(ledger_dir) if r.event == "end"}
                if ids <= finished:
                    break
            await anyio.sleep(0.2)
    return time.monotonic() - started


@dataclass
class Figures:
    ledger: LedgerReport
    runs: list[Run]
    dispatched: dict[str, float]

    def latencies(self, since: float, until: float) -> list[float]:
        """Dispatch to first start, for jobs acknowledged within [since, until]."""
        first: dict[str, float] = {}
        for run in self.runs:
            if run.event == "start" and run.job_id not in first:
                first[run.job_id] = run.at
        return [first[i] - at for i, at in self.dispatched.items() if since <= at <= until and i in first]


def figures(ledger_dir: Path, dispatched: dict[str, float]) -> Figures:
    runs = read_ledger(ledger_dir)
    return Figures(check(runs, set(dispatched)), runs, dispatched)


def describe(
    name: str, producers: Producers, result: Figures, killed_at: float, window: float, last_kill: float = 0
) -> str:
    """One line: acknowledged, unconfirmed, failed dispatches, lost, duplicates, latencies.

    Latencies are of jobs dispatched around the (first) kill; the last failed dispatch is
    timed from `last_kill` when there were several.
    """
    late = result.latencies(killed_at - 1, killed_at + window)
    worst = max(late, default=0.0)
    median = statistics.median(late) if late else 0.0
    last_kill = last_kill or killed_at
    failed = [t - last_kill for t in producers.failures if t >= last_kill]
    last_failure = max(failed, default=0.0)
    return (
        f"{name}: acknowledged {len(producers.acked)}, unconfirmed {len(producers.unconfirmed)}, "
        f"failed dispatches {len(producers.failures)} (the last {last_failure:.2f} s after the kill), "
        f"lost {len(result.ledger.lost)}, duplicate runs {sum(result.ledger.duplicates.values())}; "
        f"dispatch-to-start around the kill: median {median * 1000:.0f} ms, max {worst:.2f} s"
    )
