"""The FakeEngine runs flows as Redis does: the same scenarios, played on a RedisEngine and on a
FakeEngine by the same burst Worker, leave the same trace (jobs run, in order, and each flow
job's state and failure reason after every step)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import pytest

from aiojobs_redis import Job, PermanentFailure, RedisEngine, Worker, batch, chain, use_engine
from aiojobs_redis.clock import FakeClock
from aiojobs_redis.testing import FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "flow-parity"
ledger: list[tuple[str, Any]] = []


class Step(Job):
    name = "flow_parity.Step"
    queue = QUEUE
    keep_result = "+1 hour"

    async def handle(self) -> Any:
        ledger.append(("step", self.payload["n"]))
        return self.payload["n"]


class Flaky(Job):
    name = "flow_parity.Flaky"
    queue = QUEUE
    healthy: ClassVar[bool] = False

    async def handle(self) -> None:
        ledger.append(("flaky", self.payload["n"]))
        if not Flaky.healthy:
            raise PermanentFailure("not yet")


class Report(Job):
    name = "flow_parity.Report"
    queue = QUEUE

    async def handle(self) -> None:
        result = await self.batch_result()
        ledger.append(("report", (result.total, result.done, result.failed)))


@dataclass
class Side:
    """One engine, as the scenarios drive and read it."""

    engine: RedisEngine | FakeEngine
    clock: FakeClock | None = None  # the fake's; Redis keeps its own time

    async def run(self) -> None:
        timing: dict[str, Any] = {} if self.clock is None else {"clock": self.clock}
        worker = Worker(self.engine, [QUEUE], burst=True, concurrency=1, telemetry=False, **timing)
        with anyio.fail_after(60):
            await worker.run()

    async def look(self, ids: list[str]) -> list[tuple[str, str]]:
        """Each job's state ("done" for a record gone with its end) and failure reason."""
        seen = []
        for job_id in ids:
            if isinstance(self.engine, FakeEngine):
                job = self.engine.jobs[job_id]
                seen.append(
                    (job.state, str((job.error or {}).get("reason", "")) if job.state == "failed" else "")
                )
                continue
            info = await self.engine.get_job(QUEUE, job_id)
            if info is None:
                seen.append(("done", ""))
                continue
            failed = str(info.state) == "failed" and info.error is not None
            seen.append((str(info.state), str(info.error["reason"]) if failed and info.error else ""))
        return seen


Scenario = Callable[[Side, list[Any]], Awaitable[None]]


async def chain_fails_and_is_retried(side: Side, trace: list[Any]) -> None:
    ids = await chain(Flaky({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    trace.append(await side.look(ids))
    await side.run()
    trace.append(await side.look(ids))
    Flaky.healthy = True
    trace.append(await side.engine.failed_retry([ids[0]], queue=QUEUE))
    trace.append(await side.look(ids))
    await side.run()
    trace.append(await side.look(ids))


async def on_success_fails_then_recovers(side: Side, trace: list[Any]) -> None:
    callback = Report()
    _, ids = await batch([Flaky({"n": 1}), Step({"n": 2}), Step({"n": 3})], on_success=callback).dispatch()
    assert callback.id is not None
    ids.append(callback.id)
    await side.run()
    trace.append(await side.look(ids))
    Flaky.healthy = True
    trace.append(await side.engine.failed_retry([ids[0]], queue=QUEUE))
    trace.append(await side.look(ids))
    await side.run()
    trace.append(await side.look(ids))


async def abort_in_a_flow_then_retry(side: Side, trace: list[Any]) -> None:
    ids = await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3}), Step({"n": 4})).dispatch()
    first, _, _, _ = ids
    joined = await Step({"n": 5}).dispatch(depends_on=[first, ids[3]], on_dependency_failure="run")
    ids.append(joined)
    trace.append(await side.engine.abort(ids[2], QUEUE))
    trace.append(await side.look(ids))
    await side.run()
    trace.append(await side.look(ids))
    trace.append(await side.engine.failed_retry([ids[2]], queue=QUEUE))
    trace.append(await side.look(ids))
    await side.run()
    trace.append(await side.look(ids))
    # Step 1 releases steps 2 and 5 at once: Redis takes a set's members in no set order.
    trace.append(sorted(ledger))
    ledger.clear()


async def on_complete_with_depends_on_after_it(side: Side, trace: list[Any]) -> None:
    callback = Report()
    _, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_complete=callback).dispatch()
    assert callback.id is not None
    after = await Step({"n": 3}).dispatch(depends_on=[callback.id])
    doomed = await Step({"n": 4}).dispatch(depends_on=[ids[0]])
    ids += [callback.id, after, doomed]
    await side.run()
    trace.append(await side.look(ids))
    late = await Step({"n": 5}).dispatch(depends_on=[ids[0]], on_dependency_failure="run")
    trace.append(await side.look([late]))
    await side.run()
    trace.append(await side.look([late]))


async def run_anyway_and_retries(side: Side, trace: list[Any]) -> None:
    flaky = await Flaky({"n": 1}).dispatch()
    later = await Step({"n": 2}).dispatch(delay="+1 hour")
    joined = await Step({"n": 3}).dispatch(depends_on=[flaky, later], on_dependency_failure="run")
    after = await Step({"n": 4}).dispatch(depends_on=[flaky])
    ids = [flaky, later, joined, after]
    await side.run()
    trace.append(await side.look(ids))
    Flaky.healthy = True
    trace.append(await side.engine.failed_retry([flaky], queue=QUEUE))
    trace.append(await side.look(ids))
    await side.run()
    trace.append(await side.look(ids))


async def continue_chain_then_retry_its_first_step(side: Side, trace: list[Any]) -> None:
    ids = await chain(Flaky({"n": 1}), Step({"n": 2}), Step({"n": 3}), on_failure="continue").dispatch()
    await side.run()
    trace.append(await side.look(ids))
    Flaky.healthy = True
    trace.append(await side.engine.failed_retry(None, queue=QUEUE))
    await side.run()
    trace.append(await side.look(ids))


async def callback_aborted_then_retried(side: Side, trace: list[Any]) -> None:
    callback = Report()
    _, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_complete=callback).dispatch()
    assert callback.id is not None
    ids.append(callback.id)
    trace.append(await side.engine.abort(callback.id, QUEUE))
    trace.append(await side.engine.failed_retry([callback.id], queue=QUEUE))
    trace.append(await side.look(ids))
    await side.run()
    trace.append(await side.look(ids))
    Flaky.healthy = True
    trace.append(await side.engine.failed_retry([ids[0]], queue=QUEUE))
    await side.run()
    trace.append(await side.look(ids))


SCENARIOS: list[Scenario] = [
    run_anyway_and_retries,
    continue_chain_then_retry_its_first_step,
    callback_aborted_then_retried,
    chain_fails_and_is_retried,
    on_success_fails_then_recovers,
    abort_in_a_flow_then_retry,
    on_complete_with_depends_on_after_it,
]


async def play(scenario: Scenario, side: Side) -> list[Any]:
    ledger.clear()
    Flaky.healthy = False
    trace: list[Any] = []
    with use_engine(side.engine):
        await scenario(side, trace)
    return [*trace, list(ledger)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_the_fake_engine_plays_a_flow_as_redis_does(scenario: Scenario, engine: RedisEngine) -> None:
    on_redis = await play(scenario, Side(engine))
    fake_clock = FakeClock()
    on_fake = await play(scenario, Side(FakeEngine(fake_clock), fake_clock))
    assert on_fake == on_redis
    assert [entry for entry in on_redis if entry], "the scenario ran jobs"
