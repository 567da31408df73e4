"""Helpers for the observability tests: a worker and a dashboard server in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from aiojobs_redis import RedisEngine, Worker
from aiojobs_redis.dashboard.server import DashboardServer
from aiojobs_redis.events import RedisTelemetry


def quick_telemetry(**options: Any) -> RedisTelemetry:
    """Telemetry that flushes and beats often, so tests wait milliseconds, not seconds."""
    options.setdefault("flush_interval", 0.05)
    options.setdefault("heartbeat_interval", 0.2)
    return RedisTelemetry(**options)


@asynccontextmanager
async def running_worker(engine: RedisEngine, queues: list[str], **options: Any) -> AsyncIterator[Worker]:
    options.setdefault("idle_wait", 0.5)
    options.setdefault("telemetry", quick_telemetry())
    worker = Worker(engine, queues, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


@asynccontextmanager
async def dashboard(engine: RedisEngine, **options: Any) -> AsyncIterator[str]:
    """The dashboard on a free loopback port; yields its URL (ending in /)."""
    server = DashboardServer(engine, port=0, **options)
    async with anyio.create_task_group() as tg:
        url: str = await tg.start(server.run)
        try:
            yield url
        finally:
            server.stop()
