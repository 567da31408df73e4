"""Job subclass definition: class attributes parsed once, validated early, registered by name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from aiojobs_redis import context, registry
from aiojobs_redis.config import Settings
from aiojobs_redis.context import use_engine
from aiojobs_redis.errors import (
    AiojobsRedisError,
    EngineNotConnected,
    InvalidDelay,
    InvalidQueueName,
    UnknownJob,
)
from aiojobs_redis.job import Job
from aiojobs_redis.retry import RetryPolicy


class ModuleLevelJob(Job):
    async def handle(self) -> None:
        return None


class RecordingEngine:
    """Satisfies the Engine protocol; remembers what dispatch() was handed."""

    def __init__(self) -> None:
        self.settings = Settings(engine="sync")
        self.dispatched: list[tuple[Job, Any, int]] = []

    async def dispatch(self, job: Job, *, durable: bool | None = None) -> str:
        self.dispatched.append((job, job.payload, job.effective_delay_ms))
        return f"rec-{len(self.dispatched)}"

    async def dispatch_many(self, jobs: Sequence[Job], *, durable: bool | None = None) -> list[str]:
        return [await self.dispatch(job, durable=durable) for job in jobs]

    async def aclose(self) -> None:
        return None


@pytest.fixture(autouse=True)
def no_process_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "_process_engines", [])


def test_defaults() -> None:
    class Plain(Job):
        async def handle(self) -> None:
            return None

    assert Plain.queue == "default"
    assert Plain.attempts == 1
    assert Plain.delay_ms == 0
    assert Plain.timeout_ms is None
    assert Plain.jitter is False
    assert Plain.retry_policy == RetryPolicy(
        retry_after_ms=0, backoff=1.0, max_delay_ms=3_600_000, jitter=False
    )
    job = Plain()
    assert job.payload == {}
    assert job.id is None
    assert job.attempt == 0
    assert job.effective_delay_ms == 0


def test_default_name_is_the_qualname_whatever_the_module() -> None:
    assert ModuleLevelJob.name == "ModuleLevelJob"

    class Local(Job):
        async def handle(self) -> None:
            return None

    assert Local.name == Local.__qualname__
    assert Local.name == "test_default_name_is_the_qualname_whatever_the_module.<locals>.Local"
    assert registry.lookup(Local.name) is Local


def test_subclass_of_a_job_gets_its_own_name_but_inherits_settings() -> None:
    class Parent(Job):
        queue = "parents"
        attempts = 4
        delay = "+1 minute"

        async def handle(self) -> None:
            return None

    class Child(Parent):
        pass

    assert Child.name == Child.__qualname__
    assert Child.name != Parent.name
    assert (Child.queue, Child.attempts, Child.delay_ms) == ("parents", 4, 60_000)
    assert registry.lookup(Child.name) is Child
    assert registry.lookup(Parent.name) is Parent


def test_explicit_name_is_registered() -> None:
    class Charge(Job):
        name = "billing.charge-card:v2"

    assert registry.lookup("billing.charge-card:v2") is Charge
    assert registry.registered()["billing.charge-card:v2"] is Charge


@pytest.mark.parametrize("name", ["", "1starts.with.digit", "has space", "x" * 201, "é", 5])
def test_invalid_explicit_name(name: object) -> None:
    with pytest.raises(AiojobsRedisError, match="invalid job name " + re.escape(repr(name))):
        type("BadName", (Job,), {"name": name})


def test_lookup_unknown_name() -> None:
    with pytest.raises(UnknownJob) as info:
        registry.lookup("no.such.Job")
    assert isinstance(info.value, LookupError)
    assert "'no.such.Job'" in str(info.value)


def test_lookup_finds_the_class_by_name() -> None:
    assert registry.lookup(ModuleLevelJob.name) is ModuleLevelJob
    assert ModuleLevelJob.name in registry.registered()


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        ("+5 minutes", 300_000),
        ("now", 0),
        (30, 30_000),
        (0.5, 500),
        (timedelta(hours=1), 3_600_000),
    ],
)
def test_class_delay_is_parsed(delay: Any, expected: int) -> None:
    cls = type("Delayed", (Job,), {"delay": delay})
    assert issubclass(cls, Job)
    assert cls.delay_ms == expected
    assert cls().effective_delay_ms == expected


@pytest.mark.parametrize("attr", ["delay", "retry_after", "max_retry_delay", "timeout"])
@pytest.mark.parametrize("bad", ["5 minutes", "+5 mins", "tomorrow", -1])
def test_bad_delay_at_class_definition(attr: str, bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as info:
        type("BadDelay", (Job,), {attr: bad})
    assert isinstance(info.value, InvalidDelay)
    assert f"BadDelay.{attr}" in str(info.value)


def test_bad_class_is_not_registered() -> None:
    before = registry.registered()
    with pytest.raises(InvalidDelay):
        type("NeverRegistered", (Job,), {"delay": "soon"})
    assert registry.registered() == before


def test_bad_queue_name() -> None:
    with pytest.raises(InvalidQueueName, match=re.escape("'a:b'")) as info:

        class BadQueue(Job):
            queue = "a:b"

    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("queue", ["a:b", "{x}", "", "a b", "q" * 65, 5])
def test_bad_queue_name_at_class_definition(queue: object) -> None:
    with pytest.raises(InvalidQueueName, match=re.escape(repr(queue))):
        type("BadQueue", (Job,), {"queue": queue})


def test_custom_queue() -> None:
    class Pay(Job):
        queue = "payments.eu-west_1"

    assert Pay.queue == "payments.eu-west_1"
    assert repr(Pay()).count("queue=payments.eu-west_1") == 1


@pytest.mark.parametrize("attempts", [0, -1, "3", 2.0, True, None])
def test_bad_attempts(attempts: object) -> None:
    with pytest.raises(ValueError, match="attempts must be an int >= 1"):
        type("BadAttempts", (Job,), {"attempts": attempts})


@pytest.mark.parametrize("backoff", [0.5, 0, -2, "2"])
def test_bad_backoff(backoff: object) -> None:
    with pytest.raises(ValueError, match="backoff"):
        type("BadBackoff", (Job,), {"backoff": backoff})


def test_retry_policy_from_class_attributes() -> None:
    class Flaky(Job):
        attempts = 5
        retry_after = "+10 seconds"
        backoff = 2
        max_retry_delay = "+1 minute"
        jitter = True

    assert Flaky.attempts == 5
    assert Flaky.retry_policy == RetryPolicy(
        retry_after_ms=10_000, backoff=2.0, max_delay_ms=60_000, jitter=True
    )
    assert isinstance(Flaky.retry_policy.backoff, float)

    class Steady(Job):
        retry_after = 3
        backoff = 1.5

    assert Steady.retry_policy == RetryPolicy(
        retry_after_ms=3_000, backoff=1.5, max_delay_ms=3_600_000, jitter=False
    )
    assert [Steady.retry_policy.delay_ms(n) for n in (1, 2, 3)] == [3_000, 4_500, 6_750]


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [(None, None), (0.05, 50), (30, 30_000), ("+30 seconds", 30_000), (timedelta(minutes=2), 120_000)],
)
def test_timeout_is_parsed(timeout: Any, expected: int | None) -> None:
    cls = type("Timed", (Job,), {"timeout": timeout})
    assert issubclass(cls, Job)
    assert cls.timeout_ms == expected


def test_parsed_attributes_belong_to_each_class() -> None:
    class Slow(Job):
        delay = "+1 hour"
        timeout = 5

    class Fast(Job):
        pass

    assert (Slow.delay_ms, Slow.timeout_ms) == (3_600_000, 5_000)
    assert (Fast.delay_ms, Fast.timeout_ms) == (0, None)


def test_set_payload_is_fluent() -> None:
    job = ModuleLevelJob()
    same = job.set_payload({"order": 7})
    assert same is job
    assert job.payload == {"order": 7}


def test_constructor_payload() -> None:
    assert ModuleLevelJob({"a": 1}).payload == {"a": 1}
    assert ModuleLevelJob([1, 2]).payload == [1, 2]
    assert ModuleLevelJob(None).payload == {}


def test_set_delay_overrides_the_class_delay_for_one_job() -> None:
    class Later(Job):
        delay = "+1 hour"

    job = Later()
    assert job.set_delay("+5 seconds") is job
    assert job.effective_delay_ms == 5_000
    assert Later.delay_ms == 3_600_000
    assert Later().effective_delay_ms == 3_600_000
    assert job.set_delay("now").effective_delay_ms == 0
    assert job.set_delay(timedelta(seconds=2)).effective_delay_ms == 2_000


def test_set_delay_rejects_a_bad_delay() -> None:
    with pytest.raises(InvalidDelay, match=re.escape("'in a bit'")):
        ModuleLevelJob().set_delay("in a bit")


def test_repr_does_not_show_the_payload() -> None:
    job = ModuleLevelJob({"card_number": "4111111111111111", "cvv": "987"})
    job.id = "0lq3z1y7a0000abcde"
    text = repr(job)
    assert "4111111111111111" not in text
    assert "987" not in text
    assert "card_number" not in text
    assert text == "<ModuleLevelJob id=0lq3z1y7a0000abcde queue=default attempt=0>"
    assert str(job) == text


@pytest.mark.anyio
async def test_dispatch_without_an_engine() -> None:
    with pytest.raises(EngineNotConnected) as info:
        await Job().dispatch()
    assert isinstance(info.value, RuntimeError)
    assert "connect()" in str(info.value)
    with pytest.raises(EngineNotConnected):
        await ModuleLevelJob({"x": 1}).dispatch()


@pytest.mark.anyio
async def test_dispatch_hands_the_job_to_the_current_engine() -> None:
    engine = RecordingEngine()
    with use_engine(engine):
        job = ModuleLevelJob({"a": 1})
        assert await job.dispatch() == "rec-1"
        assert await job.dispatch({"b": 2}, delay="+2 seconds") == "rec-2"
        other = ModuleLevelJob()
        assert await other.dispatch(None) == "rec-3"
    assert engine.dispatched[0] == (job, {"a": 1}, 0)
    assert engine.dispatched[1] == (job, {"b": 2}, 2_000)
    assert engine.dispatched[2] == (other, None, 0)
    assert job.payload == {"b": 2}


@pytest.mark.anyio
async def test_dispatch_with_a_bad_delay_does_not_reach_the_engine() -> None:
    engine = RecordingEngine()
    with use_engine(engine), pytest.raises(InvalidDelay):
        await ModuleLevelJob().dispatch(delay="5 minutes")
    assert engine.dispatched == []


@pytest.mark.anyio
async def test_base_handle_is_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match=r"^Job must define async def handle"):
        await Job().handle()
