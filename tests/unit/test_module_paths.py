"""Where the engine's parts live, pinned: the module paths are part of the public surface."""

from __future__ import annotations

import importlib
import inspect

import pytest

from aiojobs_redis import RedisEngine

MODULE_NAMES = [
    ("aiojobs_redis.engine", "RedisEngine"),
    ("aiojobs_redis.admin", "Admin"),
    ("aiojobs_redis.admin", "Refused"),
    ("aiojobs_redis.admin", "ServerProbe"),
    ("aiojobs_redis.boundary", "redis_errors"),
    ("aiojobs_redis.boundary", "map_error"),
    ("aiojobs_redis.telemetry_store", "TelemetryStore"),
    ("aiojobs_redis.telemetry_store", "HISTORY_MINUTES"),
    ("aiojobs_redis.events", "RedisTelemetry"),
    ("aiojobs_redis.records", "LeasedJob"),
    ("aiojobs_redis.records", "Event"),
    ("aiojobs_redis.records", "WorkerInfo"),
    ("aiojobs_redis.records", "Throughput"),
    ("aiojobs_redis.keys", "workers_key"),
    ("aiojobs_redis.keys", "worker_key"),
    ("aiojobs_redis.keys", "throughput_field"),
    ("aiojobs_redis.keys", "parse_throughput_field"),
    ("aiojobs_redis.redis_clock", "RedisClock"),
    ("aiojobs_redis.dispatch_args", "DispatchArgs"),
    ("aiojobs_redis.scripts", "SCRIPT_NAMES"),
    ("aiojobs_redis.topology", "is_loopback"),
]


@pytest.mark.parametrize(("module", "name"), MODULE_NAMES)
def test_module_paths(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


@pytest.mark.parametrize(
    "method",
    [
        "stats",
        "get_job",
        "known_queues",
        "failed_list",
        "failed_retry",
        "failed_forget",
        "failed_flush",
        "running_jobs",
        "redis_time_ms",
        "recent_events",
        "throughput",
        "alive_workers",
    ],
)
def test_inspection_methods_are_engine_methods(method: str) -> None:
    assert inspect.iscoroutinefunction(getattr(RedisEngine, method))


def test_every_lua_file_is_a_named_script() -> None:
    from importlib import resources

    from aiojobs_redis.scripts import SCRIPT_NAMES

    lua = resources.files("aiojobs_redis") / "lua"
    files = {p.name.removesuffix(".lua") for p in lua.iterdir() if p.name.endswith(".lua")}
    assert files - {"_prelude"} == set(SCRIPT_NAMES)
    assert not (resources.files("aiojobs_redis") / "events.lua").is_file(), "all Lua lives in lua/"
