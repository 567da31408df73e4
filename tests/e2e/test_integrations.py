"""The web-framework integrations, served for real and called over HTTP.

FastAPI apps run under uvicorn in a thread of their own (their own event loop, so nothing of
the test's context leaks into the server's tasks); aiohttp apps run under an `AppRunner` on
a loopback socket. Requests go through httpx. Nothing here installs an engine itself, so
what `current_engine()` sees is exactly what the integration did.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI, Request
from support.keyspace import delete_prefix
from support.wait import eventually

from aiojobs_redis import EngineNotConnected, Job, RedisEngine, Settings, SyncEngine, current_engine
from aiojobs_redis.integrations.aiohttp import ENGINE_KEY, WORKER_KEY, setup
from aiojobs_redis.integrations.asgi import lifespan

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(30)]

QUEUE = "itest"
ID_LENGTH = 18
probe: ContextVar[str | None] = ContextVar("probe", default=None)


def list_key(engine: RedisEngine, what: str) -> str:
    return f"{engine.settings.prefix}itest:{what}"


class Step(Job):
    """Records its tag in `<prefix>itest:started`, sleeps `seconds`, then in `<prefix>itest:done`.

    It reaches Redis through `current_engine()`: jobs run by an in-process worker find the
    engine the integration installed.
    """

    name = "itest.Step"
    queue = QUEUE

    async def handle(self) -> None:
        engine = current_engine()
        assert isinstance(engine, RedisEngine)
        await engine.redis.rpush(list_key(engine, "started"), self.payload["tag"])
        await anyio.sleep(self.payload.get("seconds", 0))
        await engine.redis.rpush(list_key(engine, "done"), self.payload["tag"])


class Inline(Job):
    name = "itest.Inline"
    ran: list[str] = []  # noqa: RUF012 - the sync engine's runs, in this process

    async def handle(self) -> None:
        Inline.ran.append(self.payload["tag"])


@pytest.fixture
async def inspector(settings: Settings) -> AsyncIterator[RedisEngine]:
    """An engine to look at Redis with, never installed; deletes the prefix's keys afterwards."""
    try:
        current_engine()
    except EngineNotConnected:
        pass
    else:  # pragma: no cover - another test left an engine installed
        pytest.fail("an engine is installed before the test starts")
    async with RedisEngine(settings) as opened:
        yield opened
    await delete_prefix(settings.url, settings.prefix)


async def tags(engine: RedisEngine, what: str) -> list[str]:
    found = await engine.redis.lrange(list_key(engine, what), 0, -1)
    return [t.decode() if isinstance(t, bytes) else t for t in found]


def assert_no_engine() -> None:
    with pytest.raises(EngineNotConnected):
        current_engine()


class UvicornThread:
    """`app` served by uvicorn on a free loopback port, in a thread with its own event loop."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="uvicorn", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    async def __aenter__(self) -> UvicornThread:
        self.thread.start()
        with anyio.fail_after(10):
            while not self.server.started:
                if not self.thread.is_alive():
                    raise AssertionError("uvicorn stopped during start-up")
                await anyio.sleep(0.02)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> float:
        """Shut the server down (lifespan included); return how long that took."""
        started = time.monotonic()
        self.server.should_exit = True
        await anyio.to_thread.run_sync(self.thread.join, 20)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not shut down"
        return time.monotonic() - started


# -- FastAPI / Starlette ----------------------------------------------------------------------


async def test_fastapi_routes_dispatch_through_the_lifespan_and_shutdown_closes_the_engine(
    inspector: RedisEngine, redis_url: str, prefix: str
) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def my_lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        # Runs inside: the engine is open already, so start-up may dispatch.
        events.append("startup:" + await Step().dispatch({"tag": "from-startup"}))
        probe.set("set in the lifespan")
        yield {"greeting": "state from my lifespan"}
        events.append("shutdown:" + await Step().dispatch({"tag": "from-shutdown"}))

    jobs = lifespan(my_lifespan, url=redis_url, prefix=prefix)
    app = FastAPI(lifespan=jobs)

    @app.post("/orders")
    async def order(request: Request) -> dict[str, Any]:
        return {
            "job": await Step().dispatch({"tag": "from-route"}),
            "same_engine": current_engine() is jobs.engine,
            "probe": probe.get(),
            "greeting": request.state.greeting,
        }

    async with UvicornThread(app) as server:
        opened = jobs.engine
        assert isinstance(opened, RedisEngine) and jobs.worker is None
        async with httpx.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as client:
            response = await client.post("/orders")
        assert response.status_code == 200, response.text
        body = response.json()
        # A ContextVar set in the lifespan is not seen by request handlers; the engine is.
        assert body["probe"] is None
        assert body["same_engine"] is True
        assert body["greeting"] == "state from my lifespan"
        assert len(body["job"]) == ID_LENGTH
        stored = await inspector.get_job(QUEUE, body["job"])
        assert stored is not None and (stored.name, stored.state) == ("itest.Step", "ready")

    assert [e.split(":")[0] for e in events] == ["startup", "shutdown"]
    assert (await inspector.stats(QUEUE))[0].ready == 3, "start-up, route and shutdown dispatched"
    assert jobs.engine is None
    assert "closed" in repr(opened)
    assert_no_engine()


async def test_fastapi_in_process_worker_runs_jobs_and_drains_on_shutdown(
    inspector: RedisEngine, redis_url: str, prefix: str
) -> None:
    jobs = lifespan(
        worker_queues=[QUEUE],
        concurrency=4,
        worker_options={"grace": 10, "idle_wait": 0.5},
        url=redis_url,
        prefix=prefix,
    )
    app = FastAPI(lifespan=jobs)

    @app.post("/steps/{tag}")
    async def step(tag: str, seconds: float = 0) -> dict[str, str]:
        return {"job": await Step().dispatch({"tag": tag, "seconds": seconds})}

    server = UvicornThread(app)
    async with server, httpx.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as client:
        worker = jobs.worker
        assert worker is not None and worker.queues == [QUEUE] and worker.concurrency == 4
        assert (await client.post("/steps/quick")).status_code == 200
        await eventually(lambda: _has(inspector, "done", "quick"), what="the quick job to run")
        assert (await client.post("/steps/slow", params={"seconds": 1.0})).status_code == 200
        await eventually(lambda: _has(inspector, "started", "slow"), what="the slow job to start")
        shutdown_took = await server.stop()

    assert await tags(inspector, "done") == ["quick", "slow"], "the running job finished on shutdown"
    assert 0.5 < shutdown_took < 8, shutdown_took
    assert worker.stopping and worker.running_count == 0
    assert (worker.counters.succeeded, worker.counters.released) == (2, 0)
    stats = (await inspector.stats(QUEUE))[0]
    assert (stats.ready, stats.running, stats.failed) == (0, 0, 0)
    assert jobs.worker is None and jobs.engine is None
    assert_no_engine()


async def _has(engine: RedisEngine, what: str, tag: str) -> bool:
    return tag in await tags(engine, what)


async def test_lifespan_closes_the_engine_when_the_apps_start_up_fails(
    inspector: RedisEngine, redis_url: str, prefix: str
) -> None:
    @asynccontextmanager
    async def broken(app: object) -> AsyncIterator[None]:
        current_engine()  # open and installed by now
        raise RuntimeError("no database")
        yield  # pragma: no cover

    jobs = lifespan(broken, worker_queues=[QUEUE], url=redis_url, prefix=prefix)
    with pytest.raises(RuntimeError, match="no database"):
        async with jobs(None):
            pytest.fail("start-up should have failed")  # pragma: no cover
    assert jobs.engine is None and jobs.worker is None
    assert_no_engine()


async def test_lifespan_with_the_sync_engine_runs_jobs_inline_and_starts_no_worker(
    inspector: RedisEngine,
) -> None:
    jobs = lifespan(worker_queues=[QUEUE], engine="sync")
    async with jobs(None) as state:
        assert state is None
        assert isinstance(jobs.engine, SyncEngine) and jobs.worker is None
        await Inline().dispatch({"tag": "inline"})
    assert Inline.ran == ["inline"]
    assert_no_engine()


# -- aiohttp ----------------------------------------------------------------------------------


@asynccontextmanager
async def aiohttp_served(app: web.Application) -> AsyncIterator[tuple[web.AppRunner, str]]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield runner, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_aiohttp_setup_runs_a_worker_and_drains_it_on_cleanup(
    inspector: RedisEngine, redis_url: str, prefix: str
) -> None:
    routes = web.RouteTableDef()

    @routes.post("/steps/{tag}")
    async def step(request: web.Request) -> web.Response:
        payload = {"tag": request.match_info["tag"], "seconds": float(request.query.get("seconds", 0))}
        same = current_engine() is request.app[ENGINE_KEY]
        return web.json_response({"job": await Step().dispatch(payload), "same_engine": same})

    app = web.Application()
    app.add_routes(routes)
    setup(app, worker_queues=QUEUE, concurrency=4, worker_options={"grace": 10}, url=redis_url, prefix=prefix)

    async with (
        aiohttp_served(app) as (runner, url),
        httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client,
    ):
        engine, worker = app[ENGINE_KEY], app[WORKER_KEY]
        assert isinstance(engine, RedisEngine) and engine.settings.prefix == prefix
        assert worker.queues == [QUEUE]
        response = await client.post("/steps/quick")
        assert response.status_code == 200 and response.json()["same_engine"] is True
        assert len(response.json()["job"]) == ID_LENGTH
        await eventually(lambda: _has(inspector, "done", "quick"), what="the quick job to run")
        assert (await client.post("/steps/slow", params={"seconds": "1"})).status_code == 200
        await eventually(lambda: _has(inspector, "started", "slow"), what="the slow job to start")
        started = time.monotonic()
        await runner.cleanup()  # what web.run_app does on SIGTERM
        took = time.monotonic() - started

    assert await tags(inspector, "done") == ["quick", "slow"], "the running job finished on cleanup"
    assert 0.5 < took < 8, took
    assert (worker.counters.succeeded, worker.counters.released) == (2, 0)
    assert "closed" in repr(engine)
    assert_no_engine()


async def test_aiohttp_setup_without_worker_queues_only_opens_the_engine(
    inspector: RedisEngine, redis_url: str, prefix: str
) -> None:
    async def dispatch(request: web.Request) -> web.Response:
        return web.json_response({"job": await Step().dispatch({"tag": "queued"})})

    app = web.Application()
    app.router.add_post("/", dispatch)
    setup(app, url=redis_url, prefix=prefix)
    async with (
        aiohttp_served(app) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client,
    ):
        assert app.get(WORKER_KEY) is None
        job_id = (await client.post("/")).json()["job"]
        assert await app[ENGINE_KEY].dispatch(Step({"tag": "direct"}))
    stored = await inspector.get_job(QUEUE, job_id)
    assert stored is not None and stored.state == "ready", "queued for a worker elsewhere"
    assert_no_engine()
