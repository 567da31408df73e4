"""The sync engine (JOB_ENGINE=sync) takes `durable=` like the Redis engine, and ignores it."""

from __future__ import annotations

from typing import Any

import pytest

import aiojobs_redis
from aiojobs_redis import Settings, SyncEngine, context, use_engine
from aiojobs_redis.job import Job

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("env_clean")]


@pytest.fixture(autouse=True)
def no_process_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "_process_engines", [])


seen: list[Any] = []


class Noted(Job):
    async def handle(self) -> None:
        seen.append(self.payload["n"])


@pytest.mark.parametrize("durable", [True, False, None])
async def test_job_dispatch_with_durable_runs_inline(durable: bool | None) -> None:
    seen.clear()
    async with aiojobs_redis.connect(engine="sync") as engine:
        assert isinstance(engine, SyncEngine)
        first = await Noted().dispatch({"n": 1}, durable=durable)
        rest = await Noted.dispatch_many([{"n": 2}, {"n": 3}], durable=durable)
    assert seen == [1, 2, 3]
    assert engine.completed == [first, *rest]
    assert engine.failed == []


async def test_the_durable_setting_changes_nothing_inline() -> None:
    seen.clear()
    engine = SyncEngine(Settings(engine="sync", durable=True))
    with use_engine(engine):
        job_id = await Noted({"n": 7}).dispatch()
        ids = await engine.dispatch_many([Noted({"n": 8})], durable=True)
    assert seen == [7, 8]
    assert engine.completed == [job_id, *ids]
