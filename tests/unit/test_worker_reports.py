"""What a worker says and serves by default, on the FakeEngine: the queues of the registered
Job classes, a line per finished job (unless told not to), its last words in plain counts,
and, in burst mode, the delayed jobs it leaves behind."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest

from aiojobs_redis import Job, Worker, registry
from aiojobs_redis.lifecycle import WorkerCounters
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

LIMIT = 5  # seconds of real time any test may take: a guard, never a wait
CLOCKS: dict[str, FakeClock] = {}  # the clock a handler moves on, if any


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty registry for the test: the classes it defines are the only ones."""
    monkeypatch.setattr(registry, "_jobs", {})
    yield


def define_jobs() -> tuple[type[Job], type[Job], type[Job]]:
    """Three classes in three queues, one of them sharded (defined once the registry is emptied)."""

    class Pay(Job):
        queue = "payments"

        async def handle(self) -> None:
            if "handler" in CLOCKS:
                CLOCKS["handler"].advance(0.012)  # the handler "takes" 12 ms (the clock counts whole ms)

    class Mail(Job):
        queue = "emails"

        async def handle(self) -> None:
            pass

    class Report(Job):
        queue = "reports"
        shards = 2

        async def handle(self) -> None:
            pass

    return Pay, Mail, Report


@pytest.mark.usefixtures("own_registry")
def test_a_worker_told_no_queues_serves_the_registered_classes_queues_side_by_side() -> None:
    define_jobs()
    worker = Worker(FakeEngine())
    assert worker.queues == ["emails", "payments", "reports", "reports#0", "reports#1"]
    assert worker._groups == [worker.queues]  # one group: no queue is preferred
    # Queues given keep their order as priority.
    assert Worker(FakeEngine(), ["payments", "emails"])._groups == [["payments"], ["emails"]]


@pytest.mark.usefixtures("own_registry")
def test_with_no_class_registered_it_serves_default_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiojobs_redis.worker")
    assert Worker(FakeEngine()).queues == ["default"]
    assert any("no Job classes are registered" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("own_registry")
@pytest.mark.parametrize("log_jobs", [True, False])
async def test_each_job_done_is_logged_with_its_duration_unless_quiet(
    log_jobs: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    Pay, _, _ = define_jobs()
    clock = FakeClock()
    monkeypatch.setitem(CLOCKS, "handler", clock)
    engine = FakeEngine(clock)
    job_id = await engine.dispatch(Pay({}))
    caplog.set_level(logging.INFO, logger="aiojobs_redis")

    worker = Worker(engine, ["payments"], burst=True, clock=clock, telemetry=False, log_jobs=log_jobs)
    with anyio.fail_after(LIMIT):
        await worker.run()

    done = [r for r in caplog.records if r.name == "aiojobs_redis.worker.jobs"]
    if log_jobs:
        (record,) = done
        assert record.levelno == logging.INFO
        assert record.getMessage() == f"job {job_id} {Pay.name} done in 12.0 ms (attempt 1/1)"
    else:
        assert done == []
    stopped = [r.getMessage() for r in caplog.records if " stopped after " in r.getMessage()]
    assert stopped == [
        f"worker {worker.worker_id} stopped after 0.0 s: 1 claimed, 1 succeeded, 0 failed for good, "
        "0 retried, 0 handed back"
    ]


def test_counters_in_words_name_the_rare_endings_only_when_they_happened() -> None:
    assert WorkerCounters(claimed=5, succeeded=4, failed=1).describe() == (
        "5 claimed, 4 succeeded, 1 failed for good, 0 retried, 0 handed back"
    )
    words = WorkerCounters(claimed=3, released=1, lost=2).describe()
    assert words.endswith("1 handed back, 2 lost (outcome not recorded: lease lost, or stopped at once)")
    assert "abandoned" not in words and "bad records" not in words and "put back" not in words
    deferred = WorkerCounters(claimed=2, deferred=2).describe()
    assert deferred.endswith("0 handed back, 2 put back (no class by that name here)")


@pytest.mark.usefixtures("own_registry")
async def test_a_burst_end_names_the_delayed_jobs_left_and_when_the_next_is_due(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Pay, Mail, Report = define_jobs()
    clock = FakeClock()
    engine = FakeEngine(clock)
    await engine.dispatch(Pay({}))
    caplog.set_level(logging.INFO, logger="aiojobs_redis.worker")

    async def burst(queues: list[str]) -> str:
        caplog.clear()
        with anyio.fail_after(LIMIT):
            await Worker(engine, queues, burst=True, clock=clock, telemetry=False).run()
        (line,) = [r.getMessage() for r in caplog.records if "no ready jobs left" in r.getMessage()]
        return line.partition("(burst)")[2]

    assert await burst(["payments"]) == ""  # nothing delayed: nothing more to say

    await engine.dispatch(Pay({}).set_delay("+2 seconds"))
    clock.advance(0.2)
    assert await burst(["payments"]) == "; 1 delayed job remains in payments, next due in 1.8 s"

    await engine.dispatch_many(
        [Mail({}).set_delay("+1 minute"), *(Report({}).set_delay(5) for _ in range(3))]
    )
    line = await burst(["payments", "emails", "reports"])
    assert line == "; 5 delayed jobs remain in payments (1), emails (1), reports (3), next due in 1.8 s"
    assert len(engine.in_state("delayed")) == 5  # only read, never moved
