"""The engine's own tests, unchanged, on a primary found through Sentinel.

The same selection as test_cluster_engine.py, with the engine, the raw client and the
worker processes given a redis+sentinel:// URL: every connection asks the three
sentinels where the primary is. (Database selection works here, but its test opens
plain single-server clients.)
"""

from __future__ import annotations

import pytest
import test_dispatch_batching as batching
import test_engine_transitions as transitions
import test_worker_runs as worker_runs
import test_workers as worker_processes
from support.deployments import SentinelDeployment

from cluster.reuse import ONE_SERVER_ONLY, delete_keys, reuse

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

globals().update(reuse(transitions, skip=ONE_SERVER_ONLY))
globals().update(reuse(worker_runs, fixtures=["probe"], skip=ONE_SERVER_ONLY))
globals().update(reuse(batching, skip=ONE_SERVER_ONLY))
globals().update(reuse(worker_processes, skip=ONE_SERVER_ONLY))


@pytest.fixture
def deployment_url(sentinel_deployment: SentinelDeployment) -> str:
    return sentinel_deployment.url


@pytest.fixture(autouse=True)
def _cleanup_through_sentinel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transitions, "delete_keys", delete_keys)
