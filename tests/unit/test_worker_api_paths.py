"""Where the worker's public names live, pinned (moving one is an API change)."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

import aiojobs_redis


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("aiojobs_redis.hooks", "Hooks"),
        ("aiojobs_redis.hooks", "JobContext"),
        ("aiojobs_redis.hooks", "Observer"),
        ("aiojobs_redis.hooks", "Result"),
        ("aiojobs_redis.lifecycle", "Lifecycle"),
        ("aiojobs_redis.lifecycle", "Observer"),
        ("aiojobs_redis.lifecycle", "WorkerView"),
        ("aiojobs_redis.lifecycle", "WorkerCounters"),
        ("aiojobs_redis.worker", "Worker"),
        ("aiojobs_redis.worker", "WorkerCounters"),
        ("aiojobs_redis.worker", "Backoff"),
        ("aiojobs_redis.retry", "Backoff"),
        ("aiojobs_redis.retry", "decide"),
        ("aiojobs_redis.retry", "RetryPolicy"),
        ("aiojobs_redis.engine_base", "Engine"),
        ("aiojobs_redis.engine_base", "WorkerEngine"),
        ("aiojobs_redis.clock", "WorkerClock"),
        ("aiojobs_redis.signals", "drain_on_signal"),
        ("aiojobs_redis.testing", "FakeEngine"),
        ("aiojobs_redis.testing", "FakeClock"),
        ("aiojobs_redis.sharding", "ShardedQueue"),
    ],
)
def test_name_lives_in_module(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


@pytest.mark.parametrize(
    "name", ["JobContext", "ShardedQueue", "Observer", "WorkerEngine", "drain_on_signal"]
)
def test_top_level_exports_the_same_object(name: str) -> None:
    homes = {
        "JobContext": "aiojobs_redis.hooks",
        "ShardedQueue": "aiojobs_redis.sharding",
        "Observer": "aiojobs_redis.hooks",
        "WorkerEngine": "aiojobs_redis.engine_base",
        "drain_on_signal": "aiojobs_redis.worker",
    }
    assert getattr(aiojobs_redis, name) is getattr(importlib.import_module(homes[name]), name)


def test_the_testing_module_is_not_a_pytest_plugin_unless_asked() -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11")
    assert not [ep for ep in entry_points if ep.value.startswith("aiojobs_redis")]
