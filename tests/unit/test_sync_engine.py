"""SyncEngine (JOB_ENGINE=sync): dispatch() runs handle() inline with the job's semantics."""

from __future__ import annotations

import re
from typing import Any

import pytest

import aiojobs_redis
from aiojobs_redis import context
from aiojobs_redis.errors import PayloadNotSerializable, PayloadTooLarge, PermanentFailure
from aiojobs_redis.job import Job
from aiojobs_redis.sync import SyncEngine, SyncFailure

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("env_clean")]

ID_RE = re.compile(r"[0-9a-z]{18}")


@pytest.fixture(autouse=True)
def no_process_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "_process_engines", [])


async def test_connect_sync_opens_a_sync_engine() -> None:
    async with aiojobs_redis.connect(engine="sync") as engine:
        assert isinstance(engine, SyncEngine)
        assert engine.settings.engine == "sync"
        assert engine.completed == []
        assert engine.failed == []


async def test_job_engine_environment_variable_selects_sync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOB_ENGINE", "sync")
    async with aiojobs_redis.connect() as engine:
        assert isinstance(engine, SyncEngine)


async def test_dispatch_runs_handle_inline() -> None:
    seen: list[tuple[Any, str | None, int]] = []

    class Record(Job):
        async def handle(self) -> None:
            seen.append((self.payload, self.id, self.attempt))

    async with aiojobs_redis.connect(engine="sync") as engine:
        job = Record({"n": 1})
        job_id = await job.dispatch()
        assert seen == [({"n": 1}, job_id, 1)]  # ran before dispatch() returned
    assert ID_RE.fullmatch(job_id)
    assert job.id == job_id
    assert engine.completed == [job_id]
    assert engine.failed == []


async def test_handler_sees_the_payload_after_a_json_round_trip() -> None:
    seen: list[Any] = []

    class Record(Job):
        async def handle(self) -> None:
            seen.append(self.payload)

    original = {"pair": [1, 2], "nested": [["a", None]], "f": 1.5}
    async with aiojobs_redis.connect(engine="sync"):
        job = Record(original)
        await job.dispatch()
    assert seen == [original]
    assert seen[0] is not original
    assert job.payload is original  # the caller's object is left as it was


async def test_handler_mutating_its_payload_does_not_touch_the_callers() -> None:
    class Mutate(Job):
        async def handle(self) -> None:
            self.payload["items"].append(99)

    payload = {"items": [1]}
    async with aiojobs_redis.connect(engine="sync"):
        await Mutate(payload).dispatch()
    assert payload == {"items": [1]}


async def test_fails_twice_then_succeeds_with_three_attempts() -> None:
    attempts_seen: list[int] = []

    class Flaky(Job):
        attempts = 3

        async def handle(self) -> None:
            attempts_seen.append(self.attempt)
            if len(attempts_seen) < 3:
                raise RuntimeError(f"failure {len(attempts_seen)}")

    async with aiojobs_redis.connect(engine="sync") as engine:
        job_id = await Flaky().dispatch()
    assert attempts_seen == [1, 2, 3]
    assert engine.completed == [job_id]
    assert engine.failed == []


async def test_always_failing_job_runs_exactly_attempts_times() -> None:
    runs: list[int] = []

    class Broken(Job):
        attempts = 2

        async def handle(self) -> None:
            runs.append(self.attempt)
            raise ValueError("always")

    async with aiojobs_redis.connect(engine="sync", sync_raise_on_failure=False) as engine:
        job_id = await Broken({"k": "v"}).dispatch()  # does not raise
    assert runs == [1, 2]
    assert engine.completed == []
    assert len(engine.failed) == 1
    failure = engine.failed[0]
    assert isinstance(failure, SyncFailure)
    assert failure.id == job_id
    assert failure.name == Broken.name
    assert failure.attempts == 2
    assert isinstance(failure.error, ValueError)
    assert str(failure.error) == "always"


async def test_permanent_failure_stops_after_one_run() -> None:
    runs: list[int] = []

    class Declined(Job):
        attempts = 5

        async def handle(self) -> None:
            runs.append(self.attempt)
            raise PermanentFailure("declined")

    async with aiojobs_redis.connect(engine="sync", sync_raise_on_failure=False) as engine:
        job_id = await Declined().dispatch()
    assert runs == [1]
    assert engine.completed == []
    assert [(f.id, f.attempts) for f in engine.failed] == [(job_id, 1)]
    assert isinstance(engine.failed[0].error, PermanentFailure)


async def test_unserialisable_payload_raises_and_runs_nothing() -> None:
    runs: list[int] = []

    class Never(Job):
        async def handle(self) -> None:
            runs.append(self.attempt)

    async with aiojobs_redis.connect(engine="sync") as engine:
        job = Never({"tags": {"a", "b"}})
        with pytest.raises(PayloadNotSerializable, match=re.escape("builtins.set at ['tags']")):
            await job.dispatch()
    assert runs == []
    assert engine.completed == []
    assert engine.failed == []
    assert job.id is None


async def test_payload_over_the_limit_raises_and_runs_nothing() -> None:
    runs: list[int] = []

    class Never(Job):
        async def handle(self) -> None:
            runs.append(self.attempt)

    async with aiojobs_redis.connect(engine="sync", max_payload_bytes=16) as engine:
        await Never({"s": "x" * 8}).dispatch()  # {"s":"xxxxxxxx"} is exactly 16 bytes
        with pytest.raises(PayloadTooLarge):
            await Never({"s": "x" * 9}).dispatch()
    assert runs == [1]
    assert len(engine.completed) == 1


async def test_each_dispatch_gets_a_new_id() -> None:
    class Noop(Job):
        async def handle(self) -> None:
            return None

    async with aiojobs_redis.connect(engine="sync") as engine:
        ids = [await Noop().dispatch() for _ in range(20)]
    assert len(set(ids)) == 20
    assert engine.completed == ids
    assert repr(engine) == "<SyncEngine completed=20 failed=0>"


async def test_sync_engine_used_directly() -> None:
    ran: list[Any] = []

    class Direct(Job):
        async def handle(self) -> None:
            ran.append(self.payload)

    async with SyncEngine() as engine:
        job_id = await engine.dispatch(Direct([1, 2]))
    assert ran == [[1, 2]]
    assert engine.completed == [job_id]


async def test_abort_on_the_sync_engine_is_a_clear_error() -> None:
    """A job the sync engine ran has ended before dispatch() returned: nothing to abort."""
    async with aiojobs_redis.connect(engine="sync"):
        with pytest.raises(aiojobs_redis.ConfigurationError, match="SyncEngine cannot abort jobs"):
            await aiojobs_redis.abort("0123456789abcdefgh")
