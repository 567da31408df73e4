"""Typed payloads through the real Redis: the model goes in at dispatch and comes out in
handle(); an invalid one stores nothing."""

from __future__ import annotations

import datetime
import uuid
from typing import ClassVar

import anyio
import pytest
from pydantic import BaseModel

from aiojobs_redis import InvalidPayload, Job, RedisEngine, Worker

pytestmark = pytest.mark.anyio

QUEUE = "typed-redis"


class Signup(BaseModel):
    user: uuid.UUID
    at: datetime.datetime
    plan: tuple[str, int]


class Welcome(Job):
    queue = QUEUE
    name = "tests.typed_redis.Welcome"
    payload_type = Signup
    seen: ClassVar[list[object]] = []

    async def handle(self) -> None:
        self.seen.append(self.payload)


async def test_a_model_dispatched_to_redis_reaches_handle_as_the_model(engine: RedisEngine) -> None:
    signup = Signup(user=uuid.uuid4(), at=datetime.datetime.now(datetime.UTC), plan=("pro", 12))
    await Welcome(signup).dispatch()
    with pytest.raises(InvalidPayload, match="user: Input should be a valid UUID"):
        await Welcome({"user": "nope", "at": "2025-01-01T00:00:00Z", "plan": ["x", 1]}).dispatch()
    assert (await engine.stats(QUEUE))[0].ready == 1, "the invalid one was never stored"
    worker = Worker(engine, [QUEUE], burst=True, telemetry=False, tracing=False)
    with anyio.fail_after(30):
        await worker.run()
    assert Welcome.seen == [signup] and isinstance(Welcome.seen[0], Signup)
