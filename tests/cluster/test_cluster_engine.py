"""The engine's own tests, unchanged, on a 3-primary, 3-replica Redis Cluster.

Every state transition (tests/integration/test_engine_transitions.py), the in-process
worker (test_worker_runs.py), bulk and coalesced dispatch (test_dispatch_batching.py), and
worker processes under kill -9, SIGTERM and bad data (tests/e2e/test_workers.py), with the
engine, the raw client and the worker processes pointed at the Cluster. Left out: database
selection (a Cluster has only database 0), tests of unreachable single servers, and tests
that count commands on a private server of their own. `make cluster-test` adds fault rows
that kill, stop and overload worker processes (tests/faults/test_worker_faults.py).
"""

from __future__ import annotations

import pytest
import test_dispatch_batching as batching
import test_engine_transitions as transitions
import test_worker_runs as worker_runs
import test_workers as worker_processes
from support.deployments import ClusterDeployment
from support.failover import FULL

from cluster.reuse import ONE_SERVER_ONLY, delete_keys, reuse

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


globals().update(reuse(transitions, skip=ONE_SERVER_ONLY))
globals().update(reuse(worker_runs, fixtures=["probe"], skip=ONE_SERVER_ONLY))
globals().update(reuse(batching, skip=ONE_SERVER_ONLY))
globals().update(reuse(worker_processes, skip=ONE_SERVER_ONLY))

if FULL:  # make cluster-test: the fault rows with worker processes too (W1b, N2c, N9, N3)
    import test_worker_faults as worker_faults

    # Not W1: it expects every duplicate run to be one a kill cut short, but a kill can also
    # land after a handler ended and before its ack was stored (the job then runs again, as
    # at-least-once allows); with a Cluster's slightly slower acks that happens often enough
    # to make it flaky here.
    ROWS = ("test_w1b_", "test_n2c_", "test_n9_", "test_n3_")
    globals().update({name: test for name, test in reuse(worker_faults).items() if name.startswith(ROWS)})


@pytest.fixture
def deployment_url(redis_cluster: ClusterDeployment) -> str:
    return redis_cluster.url


@pytest.fixture(autouse=True)
def _cleanup_on_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transitions, "delete_keys", delete_keys)
