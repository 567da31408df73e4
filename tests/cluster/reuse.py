"""Running tests written for one server on a Cluster or behind Sentinel, without copying them.

`reuse(module)` returns a module's test functions (and the module-level fixtures named),
for a test module on a deployment to take into its own namespace: pytest collects them
there, and their fixtures resolve to this directory's (conftest.py), which point at the
deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType

from aiojobs_redis import RedisEngine, Settings

# Reused tests that do not apply on a Cluster or behind Sentinel, and why.
ONE_SERVER_ONLY = {
    "test_db_setting_selects_the_database": "a Cluster has only database 0; the test opens plain clients",
    "test_invalid_job_ids_are_refused_before_any_io": "no deployment involved",
    "test_dispatch_to_an_unreachable_redis_raises_engine_unavailable": "a single server URL",
    "test_dispatch_to_a_silent_redis_raises_engine_unavailable": "a single server URL",
    "test_concurrent_dispatches_are_coalesced": "counts commands on a private server",
    "test_sequential_dispatches_still_take_one_call_each": "counts commands on a private server",
    "test_concurrent_acks_are_coalesced_and_fenced_one_by_one": "counts commands on a private server",
}


def reuse(
    module: ModuleType, *, fixtures: Iterable[str] = (), skip: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Test functions of `module` (but those in `skip`: name -> why) and the fixtures named."""
    skipped = skip or {}
    taken: dict[str, object] = {
        name: value
        for name, value in vars(module).items()
        if name.startswith("test_") and callable(value) and name not in skipped
    }
    taken.update({name: getattr(module, name) for name in fixtures})
    return taken


async def delete_everywhere(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` on every primary of the deployment at `url`."""
    async with RedisEngine(Settings(url=url, prefix=prefix)) as engine:
        async for key in engine.redis.scan_iter(match=f"{prefix}*", count=1000):
            await engine.redis.delete(key)


async def delete_keys(url: str, prefix: str, db: int | None = None) -> None:
    """Stands in for the single-server cleanup helper of the reused tests."""
    await delete_everywhere(url, prefix)
