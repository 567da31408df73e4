"""Abort: a waiting job never runs, a running one's lease is revoked, and the end is recorded
once as aborted (failed set, reason "aborted", no attempt used); `failed retry` revives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from support.engine_calls import claim_from
from support.redis_server import RedisServer

from aiojobs_redis import Job, RedisEngine, RetryLater, Settings, Worker, abort, use_engine
from aiojobs_redis.abort import ABORT_MARK_MS
from aiojobs_redis.ids import new_job_id

pytestmark = pytest.mark.anyio

QUEUE = "abort-it"
LEASE_MS = 30_000
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "late"}


class Task(Job):
    name = "abort_tests.Task"
    queue = QUEUE
    attempts = 3
    ran: ClassVar[list[Any]] = []

    async def handle(self) -> None:
        Task.ran.append(self.payload["n"])


class FailsOnce(Job):
    name = "abort_tests.FailsOnce"
    queue = QUEUE
    attempts = 3
    ran: ClassVar[list[str]] = []

    async def handle(self) -> None:
        FailsOnce.ran.append(str(self.id))
        if len(FailsOnce.ran) == 1:
            raise RetryLater("+1 hour")


@pytest.fixture(autouse=True)
def fresh_ledgers() -> None:
    Task.ran.clear()
    FailsOnce.ran.clear()


async def run_burst(engine: RedisEngine) -> Worker:
    worker = Worker(engine, [QUEUE], burst=True, telemetry=False, idle_wait=0.2)
    with anyio.fail_after(30):
        await worker.run()
    return worker


async def assert_aborted(engine: RedisEngine, job_id: str, attempts_used: int = 0) -> None:
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.state == "failed", info
    assert info.error is not None and info.error["reason"] == "aborted", info.error
    assert info.attempts == attempts_used, "abort uses no attempt"
    assert [j.id for j in await engine.failed_list(QUEUE)].count(job_id) == 1


async def test_an_inline_ready_job_aborted_never_runs(engine: RedisEngine) -> None:
    keep = await Task().dispatch({"n": 1})
    doomed = await Task().dispatch({"n": 2})
    assert await engine.abort(doomed, QUEUE, reason="user cancelled") is True
    await assert_aborted(engine, doomed)
    info = await engine.get_job(QUEUE, doomed)
    assert info is not None and info.error is not None and info.error["message"] == "user cancelled"
    assert await engine.redis.llen(engine.keys(QUEUE).ready) == 1
    await run_burst(engine)
    assert Task.ran == [1], "only the job not aborted ran"
    assert keep


async def test_abort_without_a_queue_finds_the_job_in_any_queue(engine: RedisEngine) -> None:
    await engine.register_queues([QUEUE, "elsewhere"])
    doomed = await Task().dispatch({"n": 1})
    assert await abort(doomed) is True  # the module-level call: the current engine, every queue
    await assert_aborted(engine, doomed)


async def test_a_delayed_job_aborted_never_runs(engine: RedisEngine) -> None:
    doomed = await Task().dispatch({"n": 1}, delay=0.3)
    assert await engine.abort(doomed) is True
    await assert_aborted(engine, doomed)
    assert await engine.redis.zcard(engine.keys(QUEUE).delayed) == 0
    await anyio.sleep(0.4)
    await run_burst(engine)
    assert Task.ran == []


async def test_a_job_waiting_for_its_retry_aborted_never_runs_again(engine: RedisEngine) -> None:
    job_id = await FailsOnce().dispatch({})
    await run_burst(engine)  # fails once: retry due in an hour
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.state == "delayed"
    assert await engine.abort(job_id) is True
    await assert_aborted(engine, job_id, attempts_used=1)
    assert await engine.redis.zcard(engine.keys(QUEUE).delayed) == 0
    assert await engine.promote([QUEUE]) == (0, -1)
    await run_burst(engine)
    assert FailsOnce.ran == [job_id]


async def test_a_running_job_aborted_ends_aborted_and_its_late_end_is_refused(engine: RedisEngine) -> None:
    job_id = await Task().dispatch({"n": 1})
    [run] = (await claim_from(engine, QUEUE, 1, worker_id="w", request_id="1", lease_ms=LEASE_MS)).jobs
    assert await engine.aborted_runs(QUEUE, [(run.id, run.token)]) == []
    assert await engine.abort(job_id) is True
    assert await engine.aborted_runs(QUEUE, [(run.id, run.token)]) == [job_id], "its worker is told"
    engine._no_zmscore = True  # as on Redis 6.0
    assert await engine.aborted_runs(QUEUE, [(run.id, run.token), (run.id, "w:0")]) == [job_id]
    assert await engine.redis.zcard(engine.keys(QUEUE).running) == 0, "the lease is revoked"
    assert await engine.ack(run) is False
    assert await engine.retry(run, 0, ERROR) is False
    assert await engine.fail(run, ERROR) is False
    assert await engine.release(run) is False
    assert await engine.renew(QUEUE, [(run.id, run.token)], LEASE_MS) == [job_id]
    await assert_aborted(engine, job_id)
    assert (await engine.abort_job(job_id)).state == "already_final"
    assert await engine.abort(job_id) is False, "a second abort"


async def test_done_and_unknown_jobs_are_not_aborted(engine: RedisEngine) -> None:
    done = await Task().dispatch({"n": 1})
    await run_burst(engine)
    assert (await engine.abort_job(done, QUEUE)).state == "already_final"
    assert (await engine.abort_job(new_job_id(), QUEUE)).state == "not_found"
    assert await engine.abort(new_job_id()) is False


async def test_an_aborted_job_is_revived_by_failed_retry(engine: RedisEngine) -> None:
    waiting = await Task().dispatch({"n": 1})
    running = await Task().dispatch({"n": 2})
    await claim_from(engine, QUEUE, 1, worker_id="w", request_id="1", lease_ms=LEASE_MS)  # takes `waiting`
    assert await engine.abort(running) is True  # inline
    assert await engine.abort(waiting) is True  # running
    assert await engine.failed_retry([waiting, running], queue=QUEUE) == 2
    await run_burst(engine)
    assert sorted(Task.ran) == [1, 2]
    assert await engine.failed_list(QUEUE) == []
    # A revived run is not cancelled by the mark its aborted run left: the mark names the run.
    marks: list[bytes] = await engine.redis.zrange(engine.keys(QUEUE).aborted, 0, -1)  # type: ignore[assignment]
    assert len(marks) == 1 and marks[0].startswith(waiting.encode() + b" ")


async def test_a_replayed_abort_call_answers_true_again_and_acts_once(engine: RedisEngine) -> None:
    """redis-py resends a call whose reply was lost: the same abort id is told apart."""
    inline = await Task().dispatch({"n": 1})
    entry = await engine._inline_entry(QUEUE, inline)
    assert entry is not None
    abort_id, error = new_job_id(), b'{"reason":"aborted"}'
    first = await engine._abort_in(QUEUE, inline, abort_id, error, entry)
    again = await engine._abort_in(QUEUE, inline, abort_id, error, entry)
    assert (first.aborted, first.state) == (True, "ready")
    assert (again.aborted, again.state) == (True, "replayed")
    other = await engine._abort_in(QUEUE, inline, new_job_id(), error, entry)
    assert (other.aborted, other.state) == (False, "already_final")
    assert await engine.redis.zcard(engine.keys(QUEUE).failed) == 1


async def test_an_inline_entry_claimed_meanwhile_is_aborted_as_running(engine: RedisEngine) -> None:
    job_id = await Task().dispatch({"n": 1})
    entry = await engine._inline_entry(QUEUE, job_id)
    assert entry is not None
    [run] = (await claim_from(engine, QUEUE, 1, worker_id="w", request_id="1", lease_ms=LEASE_MS)).jobs
    outcome = await engine._abort_in(QUEUE, job_id, new_job_id(), b'{"reason":"aborted"}', entry)
    assert (outcome.aborted, outcome.state) == (True, "running")
    assert await engine.ack(run) is False


async def test_old_abort_marks_are_trimmed(clocked_engine: RedisEngine, clock: Any) -> None:
    engine = clocked_engine
    first = await Task().dispatch({"n": 1})
    await claim_from(engine, QUEUE, 1, worker_id="w", request_id="1", lease_ms=LEASE_MS)
    assert await engine.abort(first) is True
    clock.advance(ABORT_MARK_MS / 1000 + 1)
    second = await Task().dispatch({"n": 2})
    await claim_from(engine, QUEUE, 1, worker_id="w", request_id="2", lease_ms=LEASE_MS * 100)
    assert await engine.abort(second) is True
    marks: list[bytes] = await engine.redis.zrange(engine.keys(QUEUE).aborted, 0, -1)  # type: ignore[assignment]
    assert [m.split()[0] for m in marks] == [second.encode()]


# -- what plain jobs pay ----------------------------------------------------------------------


@pytest.fixture
async def private_engine(tmp_path: Path) -> Any:
    """An engine on a server of its own, so its command counts are the engine's alone."""
    with RedisServer(tmp_path / "redis", aof=False) as server:
        async with RedisEngine(Settings(url=server.url, prefix="a:")) as opened:
            with use_engine(opened):
                yield opened


async def zmscore_calls(engine: RedisEngine) -> int:
    stats = await engine.redis.info("commandstats")
    return int(stats.get("cmdstat_zmscore", {}).get("calls", 0))


async def test_an_idle_worker_sends_no_abort_checks(private_engine: RedisEngine) -> None:
    worker = Worker(private_engine, [QUEUE], telemetry=False, abort_check=0.05, idle_wait=0.2)
    async with anyio.create_task_group() as group:
        await group.start(worker.run)
        await anyio.sleep(1.0)
        worker.stop()
    assert await zmscore_calls(private_engine) == 0


async def test_plain_jobs_pay_no_abort_check_per_job(private_engine: RedisEngine) -> None:
    """The check runs per interval while jobs run, never per job; claim and ack are unchanged."""
    engine = private_engine
    await Task().dispatch({"n": 0})
    await run_burst(engine)  # warm: scripts loaded
    stats = await engine.redis.info("commandstats")
    before = {k: v["calls"] for k, v in stats.items() if k.startswith("cmdstat_")}
    jobs = 500
    await engine.dispatch_many([Task({"n": n}) for n in range(jobs)])
    started = anyio.current_time()
    worker = await run_burst(engine)
    seconds = anyio.current_time() - started
    stats = await engine.redis.info("commandstats")
    delta = {k: v["calls"] - before.get(k, 0) for k, v in stats.items() if k.startswith("cmdstat_")}
    print(f"\nabort cost: {jobs} plain jobs in {seconds:.2f} s, commands {delta}")
    assert worker.counters.succeeded == jobs
    assert delta.get("cmdstat_zmscore", 0) <= seconds / worker.abort_check + 1
