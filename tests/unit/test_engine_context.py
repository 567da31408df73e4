"""context: which engine Job.dispatch() uses, per task and process-wide."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import aiojobs_redis
from aiojobs_redis import context
from aiojobs_redis.context import current_engine, use_engine
from aiojobs_redis.errors import EngineNotConnected
from aiojobs_redis.job import Job
from aiojobs_redis.sync import SyncEngine

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("env_clean")]


class Note(Job):
    name = "engine_context.Note"  # another test module has a job Note

    async def handle(self) -> None:
        return None


@pytest.fixture(autouse=True)
def no_process_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "_process_engines", [])


async def test_no_engine() -> None:
    with pytest.raises(EngineNotConnected):
        current_engine()


async def test_use_engine_overrides_the_process_engine_within_the_block() -> None:
    local = SyncEngine()
    async with aiojobs_redis.connect(engine="sync") as process:
        assert isinstance(process, SyncEngine)
        assert current_engine() is process
        with use_engine(local):
            assert current_engine() is local
            inside = await Note().dispatch()
        assert current_engine() is process
        outside = await Note().dispatch()
    assert local.completed == [inside]
    assert process.completed == [outside]


async def test_use_engine_yields_its_engine() -> None:
    engine = SyncEngine()
    with use_engine(engine) as given:
        assert given is engine


async def test_use_engine_without_a_process_engine_and_nested() -> None:
    first, second = SyncEngine(), SyncEngine()
    with use_engine(first):
        assert current_engine() is first
        with use_engine(second):
            assert current_engine() is second
        assert current_engine() is first
    with pytest.raises(EngineNotConnected):
        current_engine()


async def test_use_engine_is_restored_after_an_exception() -> None:
    engine = SyncEngine()
    with pytest.raises(KeyError), use_engine(engine):
        raise KeyError("x")
    with pytest.raises(EngineNotConnected):
        current_engine()


async def test_use_engine_reaches_child_tasks() -> None:
    engine = SyncEngine()
    found: list[Any] = []

    async def child() -> None:
        found.append(current_engine())

    with use_engine(engine):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
    assert found == [engine]


async def test_connect_installs_the_engine_for_other_tasks() -> None:
    # The other task is started before connect(), so it inherits nothing from the block's
    # context: it can only find the engine through the process-wide installation.
    entered = anyio.Event()
    done = anyio.Event()
    results: dict[str, Any] = {}

    async def other_task() -> None:
        await entered.wait()
        results["engine"] = current_engine()
        results["id"] = await Note().dispatch()
        done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            async with aiojobs_redis.connect(engine="sync") as engine:
                entered.set()
                await done.wait()
    assert results["engine"] is engine
    assert engine.completed == [results["id"]]
    with pytest.raises(EngineNotConnected):
        current_engine()


async def test_connect_uninstalls_after_the_block() -> None:
    async with aiojobs_redis.connect(engine="sync") as engine:
        assert current_engine() is engine
    with pytest.raises(EngineNotConnected):
        current_engine()
    with pytest.raises(EngineNotConnected):
        await Note().dispatch()


async def test_other_task_after_the_block_finds_no_engine() -> None:
    errors: list[BaseException] = []

    async def late_task() -> None:
        try:
            await Note().dispatch()
        except EngineNotConnected as exc:
            errors.append(exc)

    async with aiojobs_redis.connect(engine="sync"):
        pass
    async with anyio.create_task_group() as tg:
        tg.start_soon(late_task)
    assert len(errors) == 1


async def test_connect_uninstalls_after_an_exception() -> None:
    with pytest.raises(RuntimeError, match="inside"):
        async with aiojobs_redis.connect(engine="sync"):
            raise RuntimeError("inside")
    with pytest.raises(EngineNotConnected):
        current_engine()


async def test_connect_without_install_leaves_the_process_engine_alone() -> None:
    async with aiojobs_redis.connect(engine="sync", install=False) as engine:
        assert isinstance(engine, SyncEngine)
        with pytest.raises(EngineNotConnected):
            current_engine()
        with use_engine(engine):
            assert current_engine() is engine


async def test_nested_connect_restores_the_outer_engine() -> None:
    # connect()'s docstring: "Inside the block, and in every task of the process,
    # dispatch() uses this engine." After an inner connect() closes, the outer block is
    # still open, so its engine must be current again.
    async with aiojobs_redis.connect(engine="sync") as outer:
        async with aiojobs_redis.connect(engine="sync") as inner:
            assert current_engine() is inner
        assert current_engine() is outer
