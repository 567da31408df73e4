"""Lifecycle and observers without a worker: what each is told, and the "abandoned" result."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from aiojobs_redis import Job
from aiojobs_redis.lifecycle import JobContext, Lifecycle, Observer, WorkerCounters, WorkerView
from aiojobs_redis.metrics import PrometheusMetrics
from aiojobs_redis.middleware import Chain
from aiojobs_redis.records import ClaimedJob
from aiojobs_redis.runner import SUCCEEDED, Outcome
from aiojobs_redis.testing import FakeEngine

pytestmark = pytest.mark.anyio

CLAIMED = ClaimedJob("q", "job1", "tok1", b"app.Job", b"{}", 0, 3, 1)


class Spy(Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.view: WorkerView | None = None

    def job_started(self, ctx: JobContext) -> None:
        self.seen.append(("started", ctx.result))

    def job_ended(self, ctx: JobContext) -> None:
        self.seen.append(("ended", ctx.result))

    async def serve(self, worker: WorkerView) -> None:
        self.view = worker


class Noop(Job):
    name = "lifecycle.Noop"  # another test module has a job Noop

    async def handle(self) -> None:
        return None


async def handler(job: Job, ctx: JobContext | None = None, chain: Chain = ()) -> Outcome:
    return SUCCEEDED


async def test_a_run_started_and_never_reported_is_told_as_lost_once() -> None:
    spy = Spy()
    lifecycle = Lifecycle("w1", observers=[spy])
    await lifecycle.run(CLAIMED, Noop(), handler)
    assert (CLAIMED.id, CLAIMED.token) in lifecycle.running
    lifecycle.forget(CLAIMED)
    lifecycle.forget(CLAIMED)
    assert spy.seen == [("started", None), ("ended", "lost")]
    assert not lifecycle.running


async def test_a_reported_end_reaches_observers_with_its_result() -> None:
    spy = Spy()
    lifecycle = Lifecycle("w1", observers=[spy])
    await lifecycle.run(CLAIMED, Noop(), handler)
    await lifecycle.ended(CLAIMED, "abandoned")
    assert spy.seen == [("started", None), ("ended", "abandoned")]
    assert not lifecycle.running


async def test_observers_serve_with_a_view_not_the_worker() -> None:
    spy = Spy()
    view = WorkerView("w1", ["q"], 10, WorkerCounters(), {}, FakeEngine())
    await Lifecycle("w1", observers=[spy]).serve(view)
    assert spy.view is view


def test_prometheus_counts_abandoned_runs_apart_from_lost_ones() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    for result in ("abandoned", "lost", "abandoned"):
        ctx = JobContext("w1", "q", "job1", "app.Job", 1, 3, started_ms=1, result=result)
        metrics.job_ended(ctx)
    labels = {"queue": "q", "job": "<unrunnable>"}
    assert registry.get_sample_value("aiojobs_redis_jobs_abandoned_total", labels) == 2
    assert registry.get_sample_value("aiojobs_redis_jobs_lost_total", labels) == 1
