"""The engine's multiplexed connection (wire.py) against a real redis-server and the fault proxy.

Each test starts its own server on a loopback port; the proxy sits between the wire and it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from redis import exceptions as rex
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff, NoBackoff
from support.proxy import FaultProxy
from support.redis_server import RedisServer

from aiojobs_redis import RedisEngine, Settings
from aiojobs_redis.wire import Wire

pytestmark = pytest.mark.anyio

# About 0.3 s of Lua busy work: long enough to cancel a caller while Redis runs it.
BUSY = "local i = 0 while i < tonumber(ARGV[1]) do i = i + 1 end return ARGV[2]"


@asynccontextmanager
async def wire_to(url: str, *, timeout: float = 5.0, retries: int = 0) -> AsyncIterator[Wire]:
    """A wire whose retries (if any) come 0.15 s apart, as the engine's come a little apart."""
    pool = BlockingConnectionPool.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    backoff = ConstantBackoff(0.15) if retries else NoBackoff()
    wire = Wire(pool, timeout=timeout, retry=Retry(backoff, retries))
    try:
        yield wire
    finally:
        await wire.aclose()
        await pool.aclose()


async def test_calls_and_pipelines_return_replies_in_order_with_errors_in_place(server: RedisServer) -> None:
    async with wire_to(server.url) as wire:
        assert await wire.call("SET", "k", b"v\x00w") == b"OK"
        replies = await wire.call_many([("GET", "k"), ("INCR", "k"), ("EVALSHA", "0" * 40, 0), ("PING",)])
        assert replies[0] == b"v\x00w"
        assert isinstance(replies[1], rex.ResponseError) and "not an integer" in str(replies[1])
        assert isinstance(replies[2], rex.NoScriptError)  # the class the script layer reloads on
        assert replies[3] in (b"PONG", "PONG")
        with pytest.raises(rex.ResponseError, match="not an integer"):
            await wire.call("INCR", "k")


async def test_many_tasks_share_one_connection_and_get_their_own_replies(server: RedisServer) -> None:
    async with wire_to(server.url) as wire, Redis.from_url(server.url) as direct:
        before = int((await direct.info("stats"))["total_connections_received"])
        results: dict[int, bytes] = {}

        async def echo(i: int) -> None:
            results[i] = await wire.call("ECHO", f"task-{i}")

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(echo, i)
        after = int((await direct.info("stats"))["total_connections_received"])
    assert results == {i: f"task-{i}".encode() for i in range(300)}
    assert after - before == 1, "300 concurrent callers used one connection"


async def test_a_cancelled_caller_leaves_the_connection_in_step(server: RedisServer) -> None:
    async with wire_to(server.url) as wire:
        await wire.call("PING")
        with anyio.move_on_after(0.02) as scope:
            await wire.call("EVAL", BUSY, 0, 3_000_000, "stale")
        assert scope.cancelled_caught
        # The stale reply arrives first and is dropped; this call gets its own.
        assert await wire.call("ECHO", "fresh") == b"fresh"
        assert await wire.call("EVAL", BUSY, 0, 10, "next") == b"next"


async def test_a_black_holed_connection_times_out_and_is_replaced(proxy: FaultProxy) -> None:
    async with wire_to(proxy.url, timeout=0.5) as wire:
        assert await wire.call("ECHO", "before") == b"before"
        proxy.black_hole()
        started = time.monotonic()
        with pytest.raises(rex.TimeoutError):
            await wire.call("ECHO", "lost")
        waited = time.monotonic() - started
        print(f"\nblack-holed call gave up after {waited:.2f} s (socket timeout 0.5 s)")
        assert 0.4 < waited < 3
        proxy.pass_through()
        assert await wire.call("ECHO", "after") == b"after"
        assert proxy.connections >= 2


async def test_a_reset_connection_fails_the_calls_in_flight_and_a_retry_replays_them(
    proxy: FaultProxy,
) -> None:
    async with wire_to(proxy.url, retries=0) as plain, wire_to(proxy.url, retries=3) as retrying:
        assert await plain.call("PING") in (b"PONG", "PONG")
        assert await retrying.call("PING") in (b"PONG", "PONG")
        proxy.set_delay(0.3)  # replies are in flight when the reset comes

        async def reset_soon() -> None:
            await anyio.sleep(0.1)
            proxy.reset()
            await anyio.sleep(0.1)
            proxy.pass_through()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reset_soon)
            with pytest.raises(rex.ConnectionError):
                await plain.call("ECHO", "plain")
        async with anyio.create_task_group() as tg:
            tg.start_soon(reset_soon)
            proxy.set_delay(0.3)
            assert await retrying.call("ECHO", "replayed") == b"replayed"


async def test_refused_connections_raise_connection_error(proxy: FaultProxy) -> None:
    proxy.refuse()
    async with wire_to(proxy.url, timeout=0.5) as wire:
        with pytest.raises(rex.ConnectionError):
            await wire.call("PING")
        proxy.pass_through()
        assert await wire.call("PING") in (b"PONG", "PONG")


async def test_the_wire_selects_the_engines_database(server: RedisServer) -> None:
    async with RedisEngine(Settings(url=server.url, prefix="wire:", db=5)) as engine:
        assert engine.wire is not None
        assert await engine.wire.call("SET", "wire:probe", "x") == b"OK"
    async with Redis.from_url(server.url, db=5) as db5, Redis.from_url(server.url, db=0) as db0:
        assert await db5.get("wire:probe") == b"x"
        assert await db0.get("wire:probe") is None


async def test_a_closed_wire_refuses_calls(server: RedisServer) -> None:
    async with wire_to(server.url) as wire:
        await wire.call("PING")
        await wire.aclose()
        with pytest.raises(rex.ConnectionError, match="closed"):
            await wire.call("PING")
