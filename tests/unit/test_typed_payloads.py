"""Typed payloads: `payload_type` on a Job class. Validated at dispatch with a named error,
stored as JSON, and handed to handle() as an instance again; a stored payload that no longer
validates fails the job for good at once, without using an attempt."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import subprocess
import sys
import uuid
from typing import Any, ClassVar

import anyio
import orjson
import pytest
from pydantic import BaseModel, Field

import aiojobs_redis
from aiojobs_redis import ConfigurationError, InvalidPayload, Job, PayloadError, Worker
from aiojobs_redis.sync import SyncEngine
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "typed"
LIMIT = 5  # seconds of real time any test may take: a guard, never a wait
SECRET = "s3cr3t-card-number"


class Tier(enum.Enum):
    GOLD = "gold"


class Address(BaseModel):
    city: str
    lines: tuple[str, ...] = ()


class Order(BaseModel):
    id: uuid.UUID
    placed_at: datetime.datetime
    due: datetime.date
    tier: Tier
    ship_to: Address
    card: str = Field(min_length=4)
    amount: float = Field(gt=0)


@dataclasses.dataclass
class Reminder:
    at: datetime.datetime
    user: uuid.UUID
    tags: list[str] = dataclasses.field(default_factory=list)


class Seen:
    payloads: ClassVar[list[Any]] = []


class PlaceOrder(Job):
    queue = QUEUE
    name = "tests.typed.PlaceOrder"
    payload_type = Order
    payload: Order

    async def handle(self) -> None:
        Seen.payloads.append(self.payload)


class Remind(Job):
    queue = QUEUE
    name = "tests.typed.Remind"
    payload_type = Reminder

    async def handle(self) -> None:
        Seen.payloads.append(self.payload)


ORDER = Order(
    id=uuid.UUID(int=7),
    placed_at=datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    due=datetime.date(2025, 2, 1),
    tier=Tier.GOLD,
    ship_to=Address(city="Lyon", lines=("1 rue", "bis")),
    card="4111",
    amount=9.5,
)


@pytest.fixture(autouse=True)
def reset() -> None:
    Seen.payloads = []


async def test_handle_gets_the_model_back_with_its_types() -> None:
    async with aiojobs_redis.connect(engine="sync"):
        await PlaceOrder(ORDER).dispatch()
    (seen,) = Seen.payloads
    assert isinstance(seen, Order) and seen == ORDER and seen is not ORDER
    assert isinstance(seen.placed_at, datetime.datetime) and seen.placed_at.utcoffset() == datetime.timedelta(
        hours=2
    )
    assert isinstance(seen.id, uuid.UUID) and seen.tier is Tier.GOLD
    assert isinstance(seen.ship_to, Address) and seen.ship_to.lines == ("1 rue", "bis")


async def test_a_dict_is_validated_into_the_model_at_dispatch() -> None:
    data = ORDER.model_dump(mode="json")
    async with aiojobs_redis.connect(engine="sync"):
        await PlaceOrder.dispatch_many([data])
    assert Seen.payloads == [ORDER]


async def test_a_dataclass_round_trips_too() -> None:
    reminder = Reminder(at=datetime.datetime(2025, 5, 6, 7, 8, 9), user=uuid.UUID(int=3), tags=["a"])
    async with aiojobs_redis.connect(engine="sync"):
        await Remind(reminder).dispatch()
    assert Seen.payloads == [reminder] and isinstance(Seen.payloads[0], Reminder)


async def test_what_is_stored_is_the_models_json() -> None:
    engine = FakeEngine(FakeClock())
    (job_id,) = await engine.dispatch_many([PlaceOrder(ORDER)])
    assert orjson.loads(engine.jobs[job_id].payload) == ORDER.model_dump(mode="json")
    assert engine.dispatched_payloads(PlaceOrder) == [ORDER], "the fake gives back what handle() gets"


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({**ORDER.model_dump(), "card": "1"}, "card: String should have at least 4 characters"),
        ({**ORDER.model_dump(), "amount": -1, "card": SECRET[:2]}, "card: "),
        ({"card": SECRET}, "id: Field required"),
        (Address(city="Paris"), "Input should be a valid dictionary or instance of Order"),
        (None, "Field required"),
    ],
    ids=["too-short", "two-errors", "missing", "other-model", "none"],
)
async def test_an_invalid_payload_is_refused_at_dispatch_before_anything_runs(
    payload: Any, where: str
) -> None:
    engine = SyncEngine()
    with pytest.raises(InvalidPayload) as info:
        await engine.dispatch(PlaceOrder(payload))
    assert isinstance(info.value, PayloadError)
    message = str(info.value)
    assert message.startswith("payload of tests.typed.PlaceOrder is not a valid Order at dispatch: ")
    assert where in message
    assert SECRET not in message and SECRET[:2] + "'" not in message, "never the input values"
    assert Seen.payloads == [] and engine.completed == [] and engine.failed == []


async def test_an_invalid_payload_stores_nothing_with_dispatch_many() -> None:
    engine = FakeEngine(FakeClock())
    with pytest.raises(InvalidPayload):
        await engine.dispatch_many([PlaceOrder(ORDER), PlaceOrder({"id": "not a uuid"})])
    assert engine.jobs == {}


async def test_a_stored_payload_that_no_longer_validates_fails_for_good_without_an_attempt() -> None:
    class Changed(Job):
        queue = QUEUE
        name = "tests.typed.Changed"
        attempts = 5

        async def handle(self) -> None:
            Seen.payloads.append(self.payload)

    engine = FakeEngine(FakeClock())
    (job_id,) = await engine.dispatch_many([Changed({"id": "order-1"})])

    class NowTyped(Changed):  # the class's payload_type changed since the job was stored
        name = "tests.typed.Changed2"
        payload_type = Order

    worker = Worker(
        engine,
        [QUEUE],
        clock=engine.clock,
        telemetry=False,
        tracing=False,
        burst=True,
        lookup=lambda _: NowTyped,
    )
    with anyio.fail_after(LIMIT):
        await worker.run()
    job = engine.jobs[job_id]
    assert Seen.payloads == [], "handle() never ran"
    assert (job.state, job.attempts, worker.counters.failed) == ("failed", 0, 1)
    assert job.error is not None and job.error["reason"] == "invalid_payload"
    assert "is not a valid Order when it was run: id: Input should be a valid UUID" in job.error["message"]


async def test_a_worker_hands_handle_the_model() -> None:
    engine = FakeEngine(FakeClock())
    await engine.dispatch_many([PlaceOrder(ORDER)])
    worker = Worker(engine, [QUEUE], clock=engine.clock, telemetry=False, tracing=False, burst=True)
    with anyio.fail_after(LIMIT):
        await worker.run()
    assert Seen.payloads == [ORDER] and worker.counters.succeeded == 1


@pytest.mark.parametrize("bad", [int, dict, object, Order(**ORDER.model_dump()), "Order"], ids=repr)
def test_a_payload_type_that_cannot_work_is_refused_when_the_class_is_defined(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"Bad\.payload_type must be a pydantic BaseModel"):

        class Bad(Job):
            payload_type = bad


PYDANTIC_MISSING = """
import sys, dataclasses
sys.modules["pydantic"] = None  # as if it were not installed
import aiojobs_redis
from aiojobs_redis import ConfigurationError, Job

class Plain(Job):
    async def handle(self) -> None: ...

@dataclasses.dataclass
class Point:
    x: int

try:
    class Typed(Job):
        payload_type = Point
except ConfigurationError as exc:
    print(exc)
"""


def test_without_pydantic_the_package_imports_and_a_typed_job_says_what_to_install() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PYDANTIC_MISSING], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Typed.payload_type needs pydantic: pip install 'aiojobs-redis[pydantic]'" in result.stdout
    assert "pydantic" not in result.stderr
